"""The websocket protocol: strict JSON both ways, the attached frame first, errors by id.

Through Starlette's TestClient on a real SQLite file. Frames are read as text and parsed the
way a browser's ``JSON.parse`` would: ``NaN`` and ``Infinity`` are not JSON.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.websockets import WebSocketDisconnect

from fastapi_objects import Connection, DurableObject, Objects, client_callable
from fastapi_objects.fastapi.protocol import decode_frame, encode_frame
from tests._support import strict_json

strict = strict_json


class _State(BaseModel):
    value: int = 0


class Loose(DurableObject[_State]):
    """An object whose code sends what JSON cannot carry, or fails."""

    public = True

    async def on_connect(self, conn: Connection) -> None:
        if conn.query.get("mode") == "bug":
            raise RuntimeError("on_connect secret-7")
        conn.send("hello", {"you": conn.id})
        self.broadcast("joined", {"who": conn.id}, exclude=conn)

    async def on_message(self, conn: Connection, frame: dict[str, Any]) -> None:
        if frame["event"] == "crash":
            raise KeyError("on_message secret-8")
        if frame["event"] == "nan":
            conn.send("nan", {"x": float("nan")})

    @client_callable
    async def infinite(self) -> float:
        return float("inf")

    @client_callable
    async def spread(self) -> None:
        self.broadcast("spread", {"x": [1.0, -math.inf]})

    @client_callable
    async def echo(self, value: Any) -> Any:
        return value

    @client_callable
    async def whisper(self, event: str) -> None:
        for conn in self.connections():
            conn.send(event)

    @client_callable
    async def increment(self) -> int:
        self.state.value += 1
        self.broadcast("changed", {"value": self.state.value})
        return self.state.value


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    objects = Objects(objects=[Loose], database_url=db_url)
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)
    with TestClient(app) as client:
        yield client


def _recv(ws: Any) -> dict[str, Any]:
    frame = strict(ws.receive_text())
    assert isinstance(frame, dict)
    return frame


@contextmanager
def _attach(client: TestClient, url: str = "/objects/loose/k/ws") -> Iterator[Any]:
    with client.websocket_connect(url) as ws:
        assert _recv(ws)["event"] == "objects:attached"
        assert _recv(ws)["event"] == "hello"
        yield ws


def _error(frame: dict[str, Any], type: str, ref: Any) -> str:
    assert frame["ok"] is False and frame["ref"] == ref, frame
    assert frame["error"]["type"] == type, frame
    return str(frame["error"]["message"])


def _usable(ws: Any, ref: str = "after") -> None:
    """The connection still works: the next frames are this call's broadcast and reply."""
    ws.send_text(json.dumps({"ref": ref, "call": "increment", "args": {}}))
    assert _recv(ws)["event"] == "changed"
    reply = _recv(ws)
    assert reply["ref"] == ref and reply["ok"] is True


# -- the attached frame ----------------------------------------------------------------------


def test_the_attached_frame_comes_first_and_names_the_connection(client: TestClient) -> None:
    with client.websocket_connect("/objects/loose/a/ws") as ws:
        attached = _recv(ws)
        assert attached["topic"] == "loose:a" and attached["event"] == "objects:attached"
        # on_connect's conn.send was queued during the attach: it follows the attached frame.
        hello = _recv(ws)
        assert hello == {"topic": "loose:a", "event": "hello",
                         "payload": {"you": attached["payload"]["connection"]}}
        # on_connect's broadcast excluded this client, though it left before the attach
        # returned: the next frame is the reply below, not "joined".
        ws.send_text('{"ref": 1, "call": "echo", "args": {"value": "x"}}')
        assert _recv(ws) == {"ref": 1, "ok": True, "result": "x"}
        with _attach(client, "/objects/loose/a/ws") as other:
            assert _recv(ws)["payload"]["who"] != attached["payload"]["connection"]
            _usable(other)


@pytest.mark.parametrize("event", ["objects:attached", "objects:custom"])
def test_clients_cannot_send_or_be_sent_reserved_events(client: TestClient, event: str) -> None:
    with _attach(client) as ws:
        ws.send_text(json.dumps({"ref": 1, "event": event, "payload": None}))
        assert "reserved" in _error(_recv(ws), "invalid_frame", 1)
        ws.send_text(json.dumps({"ref": 2, "call": "whisper", "args": {"event": event}}))
        _error(_recv(ws), "internal_error", 2)  # conn.send refused it: the turn failed
        _usable(ws)


# -- strict JSON in ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"ref": 1e400, "call": "echo", "args": {"value": 1}}',
        '{"ref": -1e400, "call": "echo", "args": {"value": 1}}',
        '{"ref": "r", "call": "echo", "args": {"value": 1e400}}',
        '{"ref": "r", "call": "echo", "args": {"value": [1, {"deep": -2E+999}]}}',
        '{"ref": NaN, "call": "echo", "args": {}}',
        '{"ref": "r", "call": "echo", "args": {"value": Infinity}}',
        '{"ref": "r", "call": "echo", "args": {"value": -Infinity}}',
        '{"ref": "r", "event": "note", "payload": {"x": NaN}}',
        '{"ref": "r", "event": "note", "payload": 1e309}',
    ],
)
def test_non_finite_numbers_are_refused_at_the_edge(client: TestClient, text: str) -> None:
    # 1e400 used to run, and the reply said "ref":Infinity: JSON.parse throws on that.
    with _attach(client) as ws:
        ws.send_text(text)
        frame = _recv(ws)
        assert "strict JSON" in _error(frame, "invalid_frame", None)
        _usable(ws)


def test_big_finite_numbers_are_fine(client: TestClient) -> None:
    with _attach(client) as ws:
        ws.send_text('{"ref": 1.5e300, "call": "echo", "args": {"value": [1e-400, 123e200]}}')
        assert _recv(ws) == {"ref": 1.5e300, "ok": True, "result": [0.0, 1.23e202]}


# -- strict JSON out -------------------------------------------------------------------------


def test_a_result_that_is_not_json_is_an_error_reply_not_infinity(client: TestClient) -> None:
    with _attach(client) as ws:
        ws.send_text('{"ref": "i", "call": "infinite", "args": {}}')
        frame = _recv(ws)  # strict: it used to be {"ref": "i", "ok": true, "result": Infinity}
        assert frame["ok"] is False and frame["ref"] == "i", frame
        # The runtime refuses such a result (the turn is rolled back); were it to let one
        # through, the edge would answer internal_error rather than write Infinity.
        assert frame["error"]["type"] in ("unstorable_value", "internal_error"), frame
        _usable(ws)


def test_a_broadcast_or_send_that_is_not_json_reaches_clients_as_an_error_frame(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with _attach(client) as ws, _attach(client) as other:
        assert _recv(ws)["event"] == "joined"  # other's arrival
        ws.send_text('{"ref": "s", "call": "spread", "args": {}}')
        frames = [_recv(ws), _recv(ws)]
        refused = next(f for f in frames if "ref" in f and f["ref"] is None)
        message = _error(refused, "internal_error", None)
        assert {"ref": "s", "ok": True, "result": None} in frames  # the call itself succeeded
        assert _recv(other) == refused  # encoded once for every client: one error, one id
        assert "NaN and Infinity" in _logged(message, caplog)
        ws.send_text('{"ref": "n", "event": "nan", "payload": null}')
        frames = [_recv(ws), _recv(ws)]
        assert {"ref": "n", "ok": True, "result": None} in frames
        _error(next(f for f in frames if f["ref"] is None), "internal_error", None)
        _usable(ws)


def _logged(message: str, caplog: pytest.LogCaptureFixture) -> str:
    """The traceback logged under the id in ``internal error <id>``."""
    assert re.fullmatch(r"internal error [0-9a-f]{16}", message), message
    [record] = [r for r in caplog.records if message.split()[-1] in r.getMessage()]
    return str(record.exc_text)


# -- bugs reach clients as an id ---------------------------------------------------------------


def test_a_bug_in_on_message_is_an_internal_error_with_a_logged_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with _attach(client) as ws:
        ws.send_text('{"ref": "c", "event": "crash", "payload": null}')
        frame = _recv(ws)
        message = _error(frame, "internal_error", "c")
        assert "secret-8" not in json.dumps(frame)
        assert "KeyError: 'on_message secret-8'" in _logged(message, caplog)
        _usable(ws)


def test_a_bug_in_on_connect_closes_1011_with_only_an_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        client.websocket_connect("/objects/loose/k/ws?mode=bug") as ws,
        pytest.raises(WebSocketDisconnect) as info,
    ):
        ws.receive_text()  # no attached frame: closed at once
    assert info.value.code == 1011
    assert "secret-7" not in info.value.reason
    reason = info.value.reason.removeprefix("attach failed: ")
    assert "RuntimeError: on_connect secret-7" in _logged(reason, caplog)


# -- the codec itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [{"x": math.inf}, {"x": [-math.inf]}, {"x": {"y": math.nan}}, {"NaN": float("nan")}],
)
def test_encode_frame_refuses_non_finite_numbers(frame: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="NaN and Infinity"):
        encode_frame(frame)


def test_encode_frame_keeps_strings_that_look_like_numbers() -> None:
    frame = {"NaN": "Infinity", "text": "-Infinity and NaN", "n": 1e308}
    assert strict(encode_frame(frame)) == frame


def test_decode_frame_is_strict() -> None:
    assert decode_frame('{"a": [1, 2.5, "NaN"]}') == {"a": [1, 2.5, "NaN"]}
    for text in ("NaN", "[Infinity]", '{"a": -Infinity}', "1e400", '[[{"a": 1E999}]]'):
        with pytest.raises(ValueError):
            decode_frame(text)
