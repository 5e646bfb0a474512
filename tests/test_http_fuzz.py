"""Fuzz the example app's HTTP routes from its own OpenAPI schema: no input gets a 5xx.

For every operation in ``/openapi.json``, Schemathesis generates requests that fit the schema
and requests that do not, and sends them in-process to the app (lifespan and all) on a fresh
SQLite file. Bad input must be a clear 4xx, never a server error (DESIGN section 3). The
examples are derandomized and bounded, so a run takes seconds and fails the same way twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from example_app.main import app as example_app
from example_app.main import create_app

METHODS = {"get", "put", "post", "delete", "patch"}
SCHEMA = example_app.openapi()


def _can_be_invalid(operation: dict[str, Any]) -> bool:
    """Whether any input of the operation has a schema an input can break (not a bare string)."""
    for parameter in operation.get("parameters", []):
        rules = set(parameter["schema"]) - {"title", "description"}
        if rules != {"type"} or parameter["schema"]["type"] != "string":
            return True
    return "requestBody" in operation


CASES = [
    pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode.value}")
    for path, operations in SCHEMA["paths"].items()
    for method, operation in operations.items()
    if method in METHODS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or _can_be_invalid(operation)
]


class _StreamCut(Exception):
    """Raised from ``send`` to stop a response after its first chunk."""


def first_chunk_only(app: ASGIApp) -> ASGIApp:
    """The app, with every streamed response ended after its first chunk.

    The event stream never ends by itself: its status and first line are all there is to check.
    Ending it on its first chunk, rather than at a read deadline, keeps the check independent of
    how busy the machine is (a deadline failed on a loaded CI machine before the stream began).
    """

    async def cut(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_until_first_chunk(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and message.get("more_body", False):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                raise _StreamCut

        try:
            await app(scope, receive, send_until_first_chunk)
        except* _StreamCut:
            pass

    return cut


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Any]:
    """The example app's schema, bound to a fresh app on its own SQLite file."""
    app = create_app(f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}")
    yield schemathesis.openapi.from_asgi("/openapi.json", first_chunk_only(app))
    shutdown_lifespans()  # stop the runtime Schemathesis started for the app


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_no_route_answers_5xx(api: Any, method: str, path: str, mode: GenerationMode) -> None:
    operation = api[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=30, deadline=None, derandomize=True, database=None,
        suppress_health_check=list(HealthCheck),
    )
    def no_server_error(case: Any) -> None:
        response = case.call(timeout=30)
        assert response.status_code < 500, (
            f"{response.status_code} for {case.as_curl_command()}\n{response.text[:2000]}"
        )

    no_server_error()
