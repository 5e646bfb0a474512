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

from example_app.main import app as example_app
from example_app.main import create_app

METHODS = {"get", "put", "post", "delete", "patch"}
SCHEMA = example_app.openapi()
# The event stream never ends: its status is all there is to check, and it comes at once.
STREAMS = {("GET", "/counters/{key}/events")}


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


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Any]:
    """The example app's schema, bound to a fresh app on its own SQLite file."""
    app = create_app(f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}")
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    shutdown_lifespans()  # stop the runtime Schemathesis started for the app


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_no_route_answers_5xx(api: Any, method: str, path: str, mode: GenerationMode) -> None:
    operation = api[path][method]
    timeout = 0.1 if (method, path) in STREAMS else 5

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=30, deadline=None, derandomize=True, database=None,
        suppress_health_check=list(HealthCheck),
    )
    def no_server_error(case: Any) -> None:
        response = case.call(timeout=timeout)
        assert response.status_code < 500, (
            f"{response.status_code} for {case.as_curl_command()}\n{response.text[:2000]}"
        )

    no_server_error()
