"""Websocket attach/detach through Starlette's TestClient: frames, hooks, limits, close codes.

Negative checks ("X never arrives") are made by sequence: the client then asks for something
whose reply must be the very next frame, so a stray frame would show up in its place.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.websockets import WebSocketDisconnect

from fastapi_objects import (
    Connection,
    ConnectionRejected,
    DurableObject,
    Objects,
    client_callable,
)
from tests._apps import Counter, Room, make_app, release_slow


@contextmanager
def _attach(client: TestClient, url: str, **kwargs: Any) -> Iterator[Any]:
    """Connect to ``url``; the first frame of an attached client must be objects:attached."""
    with client.websocket_connect(url, **kwargs) as ws:
        frame = ws.receive_json()
        assert frame["event"] == "objects:attached", frame
        assert isinstance(frame["payload"]["connection"], str), frame
        yield ws


def _closed(client: TestClient, url: str, **kwargs: Any) -> WebSocketDisconnect:
    """Connect to ``url`` and return how the server closed it (it must close at once)."""
    with client.websocket_connect(url, **kwargs) as ws, pytest.raises(WebSocketDisconnect) as info:
        ws.receive_json()
    return info.value


def _error_frame(frame: dict[str, Any], type: str, ref: Any = None) -> str:
    assert frame["ok"] is False, frame
    assert frame["ref"] == ref, frame
    assert frame["error"]["type"] == type, frame
    return str(frame["error"]["message"])


def _internal_error_is_logged(message: str, caplog: pytest.LogCaptureFixture, cause: str) -> None:
    """``message`` is ``internal error <id>``: the text stays in the log, under that id."""
    assert re.fullmatch(r"internal error [0-9a-f]{16}", message), message
    error_id = message.split()[-1]
    records = [r for r in caplog.records if error_id in r.getMessage()]
    assert len(records) == 1, caplog.text
    assert records[0].exc_text is not None and cause in records[0].exc_text


def _call(ws: Any, ref: Any, method: str, **args: Any) -> None:
    ws.send_json({"ref": ref, "call": method, "args": args})


# -- calls and broadcasts --------------------------------------------------------------------


def test_call_frames_get_results_and_broadcasts(client: TestClient) -> None:
    with _attach(client, "/objects/counter/c1/ws") as ws:
        _call(ws, 1, "increment", by=2)
        # The broadcast leaves with the commit, before the reply.
        assert ws.receive_json() == {"topic": "counter:c1", "event": "changed",
                                     "payload": {"value": 2}}
        assert ws.receive_json() == {"ref": 1, "ok": True, "result": 2}
        _call(ws, "r-2", "get")
        assert ws.receive_json() == {"ref": "r-2", "ok": True, "result": 2}
        ws.send_json({"ref": "r-3", "call": "get"})  # no args: still answered
        assert ws.receive_json() == {"ref": "r-3", "ok": True, "result": 2}
    assert client.get("/counters/c1").json() == {"value": 2}


@pytest.mark.parametrize("frame", [{"call": "increment"}, {"ref": None, "call": "increment"}])
def test_a_call_without_a_ref_is_refused_and_does_not_run(
    client: TestClient, frame: dict[str, Any]
) -> None:
    # Its reply could not be matched to it: it used to run (and answer "ref": null) anyway.
    with _attach(client, "/objects/counter/noref/ws") as ws:
        ws.send_json(frame)
        assert '"ref"' in _error_frame(ws.receive_json(), "invalid_frame", None)
        _call(ws, 1, "get")  # the next frame is this reply: nothing ran, nothing was broadcast
        assert ws.receive_json() == {"ref": 1, "ok": True, "result": 0}


def test_an_http_calls_broadcast_reaches_attached_clients(client: TestClient) -> None:
    with (
        _attach(client, "/objects/counter/h/ws") as one,
        _attach(client, "/objects/counter/h/ws") as two,
        _attach(client, "/objects/counter/other/ws") as other,
    ):
        _call(one, 1, "get")  # both are attached once their first call is answered
        assert one.receive_json()["result"] == 0
        _call(two, 1, "get")
        assert two.receive_json()["result"] == 0
        assert client.post("/counters/h/increment", params={"by": 7}).json() == {"value": 7}
        expected = {"topic": "counter:h", "event": "changed", "payload": {"value": 7}}
        assert one.receive_json() == expected
        assert two.receive_json() == expected
        _call(other, 1, "get")  # another object's client hears nothing of it
        assert other.receive_json() == {"ref": 1, "ok": True, "result": 0}


def test_a_turn_that_raised_broadcasts_nothing(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with _attach(client, "/objects/counter/f/ws") as ws:
        _call(ws, 1, "fail")
        message = _error_frame(ws.receive_json(), "internal_error", 1)
        _internal_error_is_logged(message, caplog, "ValueError: refused on purpose")
        _call(ws, 2, "increment")
        # Not {"value": 1000}: the failed turn's broadcast and state were both dropped.
        assert ws.receive_json()["payload"] == {"value": 1}
        assert ws.receive_json() == {"ref": 2, "ok": True, "result": 1}


# -- bad frames: an error frame, and the connection stays usable -----------------------------


@pytest.mark.parametrize(
    ("frame", "type", "ref"),
    [
        ("{not json", "invalid_frame", None),
        ("", "invalid_frame", None),
        ("[1, 2]", "invalid_frame", None),
        ('"call"', "invalid_frame", None),
        ("42", "invalid_frame", None),
        ('{"ref": 5}', "invalid_frame", 5),
        ('{"ref": 6, "args": {}}', "invalid_frame", 6),
        ('{"ref": 7, "call": 3}', "invalid_frame", 7),
        ('{"ref": 8, "call": "increment", "args": [1]}', "invalid_frame", 8),
        ('{"ref": 9, "event": 1}', "invalid_frame", 9),
        ('{"ref": {"a": 1}, "call": "get"}', "invalid_frame", None),
        ('{"ref": 10, "call": "nope", "args": {}}', "unknown_method", 10),
        ('{"ref": 11, "call": "on_connect", "args": {}}', "unknown_method", 11),
        ('{"ref": 12, "call": "increment", "args": {"by": "many"}}', "invalid_arguments", 12),
        ('{"ref": 13, "call": "increment", "args": {"step": 1}}', "invalid_arguments", 13),
        ('{"ref": 14, "call": "slow", "args": {}}', "invalid_arguments", 14),
    ],
)
def test_bad_frames_get_an_error_frame_and_the_connection_stays_usable(
    client: TestClient, frame: str, type: str, ref: Any
) -> None:
    with _attach(client, "/objects/counter/bad/ws") as ws:
        ws.send_text(frame)
        _error_frame(ws.receive_json(), type, ref)
        _call(ws, "after", "increment")
        assert ws.receive_json()["event"] == "changed"
        assert ws.receive_json() == {"ref": "after", "ok": True, "result": 1}


def test_binary_frames_get_an_error_frame(client: TestClient) -> None:
    with _attach(client, "/objects/counter/bin/ws") as ws:
        ws.send_bytes(b"\x00\xff\xfe")
        assert "text" in _error_frame(ws.receive_json(), "invalid_frame")
        # Even a binary frame that holds JSON: frames are JSON text (browsers send text).
        ws.send_bytes(b'{"ref": 1, "call": "increment", "args": {}}')
        _error_frame(ws.receive_json(), "invalid_frame")
        _call(ws, 2, "get")
        assert ws.receive_json() == {"ref": 2, "ok": True, "result": 0}


def test_oversized_frames_are_refused_and_the_connection_stays_usable(db_url: str) -> None:
    app, _ = make_app(db_url, max_frame_bytes=1024)
    with TestClient(app) as client, _attach(client, "/objects/counter/big/ws") as ws:
        ws.send_json({"ref": 1, "call": "increment", "args": {}, "pad": "x" * 2000})
        assert "1024" in _error_frame(ws.receive_json(), "frame_too_large")
        # The limit is in bytes: 600 two-byte characters are over 1 KiB.
        ws.send_json({"ref": 2, "call": "increment", "args": {}, "pad": "é" * 600})
        _error_frame(ws.receive_json(), "frame_too_large")
        ws.send_json({"ref": 3, "call": "increment", "args": {}, "pad": "x" * 900})
        assert ws.receive_json()["payload"] == {"value": 1}  # nothing before it was applied
        assert ws.receive_json() == {"ref": 3, "ok": True, "result": 1}


def test_too_many_calls_in_flight_is_an_overloaded_error_frame(db_url: str) -> None:
    app, objects = make_app(db_url, max_calls_in_flight=2)
    with TestClient(app) as client, _attach(client, "/objects/counter/busy/ws") as ws:
        _call(ws, 1, "slow", seconds=60)
        _call(ws, 2, "slow", seconds=60)
        _call(ws, 3, "get")
        assert "in flight" in _error_frame(ws.receive_json(), "overloaded", 3)
        assert client.portal is not None
        client.portal.call(release_slow, objects.node_id, "busy")
        replies = [ws.receive_json(), ws.receive_json()]
        assert sorted(r["ref"] for r in replies) == [1, 2]
        assert all(r["ok"] for r in replies)
        _call(ws, 4, "get")  # the slots are free again
        assert ws.receive_json() == {"ref": 4, "ok": True, "result": 0}


# -- attach: close codes, authorize, origins -------------------------------------------------


def test_unknown_type_closes_4404(client: TestClient) -> None:
    closed = _closed(client, "/objects/nope/k/ws")
    assert closed.code == 4404
    assert "nope" in closed.reason


@pytest.mark.parametrize("key", ["bad!key", "k" * 300, "caf%C3%A9"])
def test_invalid_key_closes_4400(client: TestClient, key: str) -> None:
    closed = _closed(client, f"/objects/counter/{key}/ws")
    assert closed.code == 4400
    assert closed.reason


def test_on_connect_rejection_closes_4403_with_its_reason(client: TestClient) -> None:
    closed = _closed(client, "/objects/room/r/ws")
    assert (closed.code, closed.reason) == (4403, "a name is required")
    # The refused client left no trace: the next one is alone.
    with _attach(client, "/objects/room/r/ws?name=ann") as ws:
        assert ws.receive_json()["event"] == "welcome"
        assert ws.receive_json()["payload"] == {"name": "ann", "present": ["ann"]}


def _authorize(websocket: WebSocket, type_name: str, key: str) -> bool | dict[str, Any]:
    token = websocket.query_params.get("token")
    if token == "deny":
        raise ConnectionRejected("token revoked", code=4429)
    if token == "good":
        return {"name": f"user-of-{type_name}-{key}", "role": "admin"}
    return token == "plain"


async def _authorize_async(websocket: WebSocket, type_name: str, key: str) -> Any:
    return _authorize(websocket, type_name, key)


@pytest.mark.parametrize("authorize", [_authorize, _authorize_async])
def test_authorize(db_url: str, authorize: Any) -> None:
    app, _ = make_app(db_url, authorize=authorize)
    with TestClient(app) as client:
        assert _closed(client, "/objects/room/r/ws?name=x").code == 4401
        assert _closed(client, "/objects/room/r/ws?name=x&token=bad").code == 4401
        closed = _closed(client, "/objects/room/r/ws?token=deny")
        assert (closed.code, closed.reason) == (4429, "token revoked")
        # A dict verdict is conn.auth, which on_connect reads before the client's own query.
        with _attach(client, "/objects/room/r/ws?token=good&name=spoofed") as ws:
            assert ws.receive_json()["event"] == "welcome"
            assert ws.receive_json()["payload"]["name"] == "user-of-room-r"
        with _attach(client, "/objects/room/r/ws?token=plain&name=pat") as ws:
            assert ws.receive_json()["event"] == "welcome"
            assert ws.receive_json()["payload"]["name"] == "pat"


def test_allowed_origins(db_url: str) -> None:
    app, _ = make_app(db_url, allowed_origins=["https://app.example"])
    with TestClient(app) as client:
        closed = _closed(client, "/objects/counter/o/ws", headers={"origin": "https://evil.example"})
        assert closed.code == 4403
        assert "origin not allowed" in closed.reason
        for headers in ({"origin": "https://app.example"}, {"origin": "http://testserver"}, {}):
            # Listed, the app's own (TestClient's Host is "testserver"), or no browser at all.
            with _attach(client, "/objects/counter/o/ws", headers=headers) as ws:
                _call(ws, 1, "get")
                assert ws.receive_json() == {"ref": 1, "ok": True, "result": 0}


def test_any_origin_with_star(db_url: str) -> None:
    app, _ = make_app(db_url, allowed_origins=["*"])
    with (
        TestClient(app) as client,
        _attach(client, "/objects/counter/o/ws", headers={"origin": "https://x.y"}) as ws,
    ):
        _call(ws, 1, "get")
        assert ws.receive_json()["ok"] is True


# -- hooks: welcome, presence, custom events, exclude ----------------------------------------


def test_room_presence_welcome_and_typing_excludes_the_sender(client: TestClient) -> None:
    with _attach(client, "/objects/room/lobby/ws?name=ann") as ann:
        assert ann.receive_json() == {"topic": "room:lobby", "event": "welcome",
                                      "payload": {"history": []}}
        assert ann.receive_json()["payload"] == {"name": "ann", "present": ["ann"]}
        _call(ann, 1, "say", text="hello")
        assert ann.receive_json()["payload"] == {"text": "hello"}
        assert ann.receive_json() == {"ref": 1, "ok": True, "result": 1}
        with _attach(client, "/objects/room/lobby/ws?name=bob") as bob:
            # conn.send reaches only the newcomer, with the history so far.
            assert bob.receive_json()["payload"] == {"history": ["hello"]}
            joined = {"name": "bob", "present": ["ann", "bob"]}
            assert bob.receive_json()["payload"] == joined
            assert ann.receive_json()["payload"] == joined
            # A custom event: on_message broadcasts "typing" to everyone but the sender.
            ann.send_json({"ref": "t", "event": "typing", "payload": None})
            assert bob.receive_json() == {"topic": "room:lobby", "event": "typing",
                                          "payload": {"name": "ann"}}
            assert ann.receive_json() == {"ref": "t", "ok": True, "result": None}
            _call(ann, 2, "history")  # ann's next frame is this reply, not her own typing
            assert ann.receive_json() == {"ref": 2, "ok": True, "result": ["hello"]}
            bob.send_json({"event": "typing"})  # no ref: no reply, only the broadcast
            assert ann.receive_json()["payload"] == {"name": "bob"}
            _call(bob, 3, "history")
            assert bob.receive_json() == {"ref": 3, "ok": True, "result": ["hello"]}
        # bob left: on_disconnect sees presence without him.
        assert ann.receive_json() == {"topic": "room:lobby", "event": "left",
                                      "payload": {"name": "bob", "present": ["ann"]}}


class _HookState(BaseModel):
    connects: int = 0


class Fussy(DurableObject[_HookState]):
    """on_connect that counts (a state change in a hook) or breaks, by query parameter."""

    public = True

    async def on_connect(self, conn: Connection) -> None:
        if conn.query.get("mode") == "bug":
            raise RuntimeError("a bug in on_connect")
        if conn.query.get("mode") == "huge":
            conn.state = {"blob": "x" * 20_000}
        self.state.connects += 1
        conn.send("hello", {"connects": self.state.connects})

    async def connects(self) -> int:
        return self.state.connects


def _fussy_app(db_url: str) -> FastAPI:
    objects = Objects(objects=[Fussy], database_url=db_url)
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)

    @app.websocket("/fussy/{key}")
    async def own_route(websocket: WebSocket, key: str) -> None:
        await objects.serve_websocket(websocket, Fussy, key)

    return app


def test_hooks_commit_and_serve_websocket_in_an_apps_own_route(db_url: str) -> None:
    with TestClient(_fussy_app(db_url)) as client:
        with _attach(client, "/fussy/f") as ws:
            assert ws.receive_json() == {"topic": "fussy:f", "event": "hello",
                                         "payload": {"connects": 1}}
        with _attach(client, "/objects/fussy/f/ws") as ws:
            assert ws.receive_json()["payload"] == {"connects": 2}
    with TestClient(_fussy_app(db_url)) as client, _attach(client, "/fussy/f") as ws:
        assert ws.receive_json()["payload"] == {"connects": 3}  # durable across restarts


@pytest.mark.parametrize("mode", ["bug", "huge"])
def test_a_failing_on_connect_closes_1011_and_rolls_back(db_url: str, mode: str) -> None:
    with TestClient(_fussy_app(db_url)) as client:
        closed = _closed(client, f"/fussy/f?mode={mode}")
        assert closed.code == 1011
        assert closed.reason
        with _attach(client, "/fussy/f") as ws:
            assert ws.receive_json()["payload"] == {"connects": 1}


def test_connections_per_object_limit_closes_1013(db_url: str) -> None:
    class Small(Counter):
        max_connections = 1

    objects = Objects(objects=[Small], database_url=db_url)
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)
    with TestClient(app) as client, _attach(client, "/objects/small/s/ws") as first:
        _call(first, 1, "get")
        assert first.receive_json()["ok"] is True
        closed = _closed(client, "/objects/small/s/ws")
        assert closed.code == 1013
        assert "max_connections" in closed.reason
        _call(first, 2, "get")
        assert first.receive_json() == {"ref": 2, "ok": True, "result": 0}


def _another_writer_commits(db_url: str, key: str) -> None:
    """A writer elsewhere (a process that took the object over) commits rev + 1 to a counter."""
    with sqlite3.connect(db_url.removeprefix("sqlite+aiosqlite:///")) as conn:
        conn.execute(
            "UPDATE objects_checkpoints SET rev = rev + 1, state = json_set(state, '$.value', "
            "json_extract(state, '$.value') + 1) WHERE type = 'counter' AND key = ?",
            (key,),
        )


def test_a_fenced_out_instance_closes_its_clients_1012_and_they_reconnect(db_url: str) -> None:
    app, _ = make_app(db_url)
    with TestClient(app) as a:
        with _attach(a, "/objects/counter/x/ws") as ws:
            _call(ws, 1, "increment")
            assert ws.receive_json()["event"] == "changed"
            assert ws.receive_json()["result"] == 1
            _another_writer_commits(db_url, "x")  # the stored value is 2 now
            _call(ws, 2, "increment")  # this instance is stale: its commit is fenced out
            with pytest.raises(WebSocketDisconnect) as info:
                while True:
                    frame = ws.receive_json()
                    # No broadcast of the refused turn; at most its conflict error.
                    _error_frame(frame, "conflict", 2)
            assert info.value.code == 1012
            assert "reconnect" in info.value.reason
        with _attach(a, "/objects/counter/x/ws") as ws:
            _call(ws, 3, "increment")
            assert ws.receive_json()["payload"] == {"value": 3}
            assert ws.receive_json() == {"ref": 3, "ok": True, "result": 3}


def test_a_fenced_out_call_is_answered_with_its_conflict_before_the_close(db_url: str) -> None:
    app, _ = make_app(db_url)
    with TestClient(app) as a, _attach(a, "/objects/counter/x/ws") as ws:
        _call(ws, 1, "increment")
        ws.receive_json()
        ws.receive_json()
        _another_writer_commits(db_url, "x")
        _call(ws, 2, "increment")
        # DESIGN section 3: "the caller gets a clear error" (here: not applied, conflict).
        _error_frame(ws.receive_json(), "conflict", 2)


def test_attach_with_the_database_down_closes_1011() -> None:
    app, _ = make_app(
        "postgresql+asyncpg://root@127.0.0.1:1/test", create_tables=False, pubsub_url="memory://"
    )
    with TestClient(app) as client:
        closed = _closed(client, "/objects/counter/x/ws")
        assert closed.code == 1011
        assert "storage" in closed.reason


def test_room_state_survives_a_restart(db_url: str) -> None:
    app, _ = make_app(db_url)
    with TestClient(app) as client, _attach(client, "/objects/room/r/ws?name=a") as ws:
        ws.receive_json()
        ws.receive_json()
        _call(ws, 1, "say", text="kept")
        assert ws.receive_json()["event"] == "message"
        assert ws.receive_json()["result"] == 1
    app, _ = make_app(db_url)
    with TestClient(app) as client, _attach(client, "/objects/room/r/ws?name=b") as ws:
        assert ws.receive_json()["payload"] == {"history": ["kept"]}


def test_client_js_route(client: TestClient) -> None:
    response = client.get("/objects/client.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    body = response.text
    for needle in ("new WebSocket", "call(method, args)", "on(event, fn)", "ref", "backoff"):
        assert needle in body, needle


def test_room_is_registered(client: TestClient) -> None:
    objects = client.app.state.objects  # type: ignore[attr-defined]
    assert objects.runtime.object_type("room") is Room


class GrumpyState(BaseModel):
    visits: int = 0


class Grumpy(DurableObject[GrumpyState]):
    """Its on_disconnect is broken: the server must shrug it off."""

    public = True

    async def on_connect(self, conn: Connection) -> None:
        self.state.visits += 1

    async def on_disconnect(self, conn: Connection) -> None:
        raise RuntimeError("broken on purpose")

    @client_callable
    async def visits(self) -> int:
        return self.state.visits


def test_a_failing_on_disconnect_loses_nothing_and_the_object_keeps_serving(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    objects = Objects(objects=[Grumpy], database_url=db_url)
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)
    with TestClient(app) as client:
        for expected in (1, 2):
            with _attach(client, "/objects/grumpy/g/ws") as ws:
                ws.send_json({"ref": 1, "call": "visits"})
                assert ws.receive_json() == {"ref": 1, "ok": True, "result": expected}
    assert "on_disconnect failed" in caplog.text
    assert "broken on purpose" in caplog.text
