"""One error tree, mapped once: HTTP statuses and Retry-After, and bugs as ``internal_error``.

Each test runs a real app through Starlette's TestClient on a real SQLite file.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel

import fastapi_objects
from fastapi_objects import (
    ConflictError,
    DurableObject,
    Handle,
    Objects,
    ObjectsError,
    Overloaded,
    PubSubClosed,
    StorageUnavailable,
    SubscriptionOverflow,
    get_object,
)
from fastapi_objects.fastapi.protocol import CloseCode


class _State(BaseModel):
    value: int = 0


class Buggy(DurableObject[_State]):
    """Methods with bugs in them, as an app's objects sometimes have."""

    async def crash(self) -> int:
        self.state.value += 1
        raise KeyError("secret-token-42")

    async def shout(self, event: str) -> None:
        self.broadcast(event, {})

    async def value(self) -> int:
        return self.state.value


BuggyHandle = Annotated[Handle[Buggy], Depends(get_object(Buggy))]

_RAISED: dict[str, ObjectsError] = {
    "conflict": ConflictError("fenced out"),
    "overloaded": Overloaded("queue full", retry_after=2.6),
    "storage": StorageUnavailable("database down"),
    "pubsub": PubSubClosed("the pub/sub is closed"),
    "overflow": SubscriptionOverflow("fell behind"),
}


def _app(db_url: str, own_handler: bool = False) -> FastAPI:
    objects = Objects(objects=[Buggy], database_url=db_url)
    app = FastAPI(lifespan=objects.lifespan)

    @app.post("/buggy/{key}/crash")
    async def crash(obj: BuggyHandle) -> dict[str, int]:
        return {"value": await obj.crash()}

    @app.post("/buggy/{key}/shout/{event}")
    async def shout(obj: BuggyHandle, event: str) -> None:
        await obj.shout(event)

    @app.get("/buggy/{key}")
    async def value(obj: BuggyHandle) -> dict[str, int]:
        return {"value": await obj.value()}

    @app.get("/raise/{name}")
    async def raise_(name: str) -> None:
        raise _RAISED[name]

    if own_handler:

        @app.exception_handler(Exception)
        async def mine(request: Any, exc: Exception) -> PlainTextResponse:
            return PlainTextResponse("the app's own 500", status_code=500)

    return app


def _internal_error(response: Any, caplog: pytest.LogCaptureFixture, cause: str) -> str:
    """A 500 whose body names only an id; the log has the traceback under that id."""
    assert response.status_code == 500, response.text
    body = response.json()
    assert body["error"]["type"] == "internal_error"
    message = body["error"]["message"]
    assert re.fullmatch(r"internal error [0-9a-f]{16}", message), message
    error_id = message.split()[-1]
    [record] = [r for r in caplog.records if error_id in r.getMessage()]
    assert record.exc_text is not None and cause in record.exc_text
    return str(error_id)


def test_a_bug_in_a_method_is_a_500_internal_error_with_a_logged_id(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # It used to be Starlette's bare "Internal Server Error" text: no id to find it by.
    with TestClient(_app(db_url), raise_server_exceptions=False) as client:
        response = client.post("/buggy/b/crash")
        _internal_error(response, caplog, "KeyError: 'secret-token-42'")
        assert "secret-token-42" not in response.text
        assert client.get("/buggy/b").json() == {"value": 0}  # the turn was rolled back
        other = client.post("/buggy/b/crash")
        assert other.json() != response.json()  # one id per failure


def test_an_apps_own_exception_handler_is_kept(db_url: str) -> None:
    with TestClient(_app(db_url, own_handler=True), raise_server_exceptions=False) as client:
        response = client.post("/buggy/b/crash")
        assert (response.status_code, response.text) == (500, "the app's own 500")


@pytest.mark.parametrize(
    ("name", "status", "retry_after"),
    [
        ("conflict", 409, "1"),  # the instance reloads: trying again is the cure
        ("overloaded", 503, "3"),
        ("storage", 503, "1"),
        ("pubsub", 503, "1"),
        ("overflow", 503, "1"),
    ],
)
def test_errors_that_pass_with_time_say_when_to_retry(
    db_url: str, name: str, status: int, retry_after: str
) -> None:
    with TestClient(_app(db_url)) as client:
        response = client.get(f"/raise/{name}")
        assert response.status_code == status
        assert response.headers["retry-after"] == retry_after
        assert response.json() == {
            "error": {"type": _RAISED[name].type, "message": _RAISED[name].message}
        }


def test_the_pubsub_errors_are_in_the_one_error_tree() -> None:
    for cls in (PubSubClosed, SubscriptionOverflow):
        assert issubclass(cls, ObjectsError)
        assert cls.__module__ == "fastapi_objects._exceptions"
        assert cls.__name__ in (fastapi_objects._exceptions.__doc__ or "")
    # Still importable from where pub/sub code looked for them.
    from fastapi_objects.pubsub import PubSubClosed as FromPubSub

    assert FromPubSub is PubSubClosed


@pytest.mark.parametrize("event", ["objects:attached", "objects:anything"])
def test_broadcasting_a_reserved_event_fails_the_turn(
    db_url: str, event: str, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(_app(db_url), raise_server_exceptions=False) as client:
        response = client.post(f"/buggy/b/shout/{event}")
        _internal_error(response, caplog, "reserved for the protocol's own frames")


def test_close_codes_are_named() -> None:
    assert {code.name: int(code) for code in CloseCode} == {
        "NORMAL": 1000, "ATTACH_FAILED": 1011, "RELOADED": 1012, "TOO_MANY_CLIENTS": 1013,
        "INVALID_KEY": 4400, "UNAUTHORIZED": 4401, "FORBIDDEN": 4403, "UNKNOWN_TYPE": 4404,
        "TOO_SLOW": 4408,
    }
