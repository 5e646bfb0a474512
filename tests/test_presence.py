"""Presence (runtime/presence.py): track, untrack, leaves, the frames clients get, bad input.

The runtime-level tests run on every backend (memory, SQLite, PostgreSQL): a turn that tracks
also commits state, and a turn that fails must change neither. Clients are recording
transports; the frames through a real session are checked with Starlette's TestClient.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from fastapi_objects import (
    Connection,
    DurableObject,
    InvalidCall,
    Objects,
    UnstorableValue,
    client_callable,
)
from fastapi_objects.runtime import Runtime
from fastapi_objects.runtime.presence import MAX_KEYS, MAX_META
from tests._support import Recorder as Frames
from tests.conftest import Backend

STATE, DIFF = "objects:presence_state", "objects:presence_diff"


class LobbyState(BaseModel):
    changes: int = 0


class Lobby(DurableObject[LobbyState]):
    """Tracks ``?user=`` on connect; events track, untrack or misuse presence later."""

    public = True
    meta: ClassVar[Any] = None  # what the "bad" event tracks

    async def on_connect(self, conn: Connection) -> None:
        user = conn.query.get("user")
        if user:
            conn.track(user, {"device": conn.query.get("device", "web")})

    async def on_message(self, conn: Connection, frame: dict[str, Any]) -> None:
        event, payload = frame["event"], frame.get("payload")
        payload = payload if payload is not None else ""
        self.state.changes += 1  # every event commits state too
        if event == "status":
            conn.track(conn.query["user"], {"status": payload})
        elif event == "also":
            conn.track(payload, {})
        elif event == "away":
            conn.untrack(conn.query["user"])
        elif event == "fail":
            conn.track(conn.query["user"], {"status": "never seen"})
            raise RuntimeError("the turn fails after tracking")
        elif event == "bad":
            conn.track(payload, type(self).meta)

    @client_callable
    async def who(self) -> dict[str, Any]:
        return self.presence.list()

    async def metas(self, key: str) -> list[dict[str, Any]]:
        return self.presence.get(key)


class MemoryLobby(Lobby):
    type_name = "memory_lobby"
    persistence = "memory"


class Recorder(Frames):
    """A client: every frame the runtime sends it, decoded."""

    def take(self) -> list[tuple[str, Any]]:
        """The presence frames since the last take, as (event, payload)."""
        frames, self.frames = self.frames, []
        return [(f["event"], f["payload"]) for f in frames if f["event"] in (STATE, DIFF)]


@pytest.fixture
async def rt(backend: Backend) -> AsyncIterator[Runtime]:
    async with Runtime(objects=[Lobby, MemoryLobby], database_url=backend.url,
                       schema=backend.schema, create_tables=True) as runtime:
        yield runtime


async def _join(
    rt: Runtime, user: str | None, cls: type[Lobby] = Lobby, **query: str
) -> tuple[Connection, Recorder]:
    client = Recorder()
    q = dict(query, user=user) if user else query
    conn = await rt.gateway.attach(cls, "hall", client, query=q)
    return conn, client


def _metas(payload: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if not k.startswith("phx_")}
            for m in payload[key]["metas"]]


def _refs(payload: dict[str, Any]) -> list[str]:
    return [m["phx_ref"] for entry in payload.values() for m in entry["metas"]]


@pytest.mark.parametrize("cls", [Lobby, MemoryLobby])
async def test_clients_see_each_other_join_and_leave(rt: Runtime, cls: type[Lobby]) -> None:
    ann, a = await _join(rt, "ann", cls)
    # The first client gets the (empty) state just before the first diff: its own join.
    (e1, state), (e2, diff) = a.take()
    assert (e1, state, e2) == (STATE, {}, DIFF)
    assert diff["leaves"] == {} and _metas(diff["joins"], "ann") == [{"device": "web"}]
    ann_ref = diff["joins"]["ann"]["metas"][0]["phx_ref"]

    bob, b = await _join(rt, "bob", cls, device="phone")
    (e1, state), (e2, diff) = b.take()  # the state at attach, then the diff of its join
    assert e1 == STATE and _refs(state) == [ann_ref]
    assert e2 == DIFF and _metas(diff["joins"], "bob") == [{"device": "phone"}]
    assert a.take() == [(DIFF, diff)]  # the same diff (one encoding) reaches both
    who = await rt.get(cls, "hall").who()
    assert sorted(who) == ["ann", "bob"] and _metas(who, "bob") == [{"device": "phone"}]

    await rt.gateway.detach(ann)
    [(event, left)] = b.take()
    assert event == DIFF and left["joins"] == {} and _refs(left["leaves"]) == [ann_ref]
    assert list(await rt.get(cls, "hall").who()) == ["bob"]
    await rt.gateway.detach(bob)


async def test_one_key_has_a_meta_per_connection_and_updates_are_a_leave_and_a_join(
    rt: Runtime,
) -> None:
    tab1, t1 = await _join(rt, "ann", device="tab1")
    tab2, t2 = await _join(rt, "ann", device="tab2")
    assert [m["device"] for m in await rt.get(Lobby, "hall").metas("ann")] == ["tab1", "tab2"]
    old = (await rt.get(Lobby, "hall").metas("ann"))[1]["phx_ref"]
    t1.take(), t2.take()

    await rt.gateway.message(tab2, {"event": "status", "payload": "away"})
    [(_, diff)] = t1.take()
    assert _refs(diff["leaves"]) == [old]
    [joined] = diff["joins"]["ann"]["metas"]
    assert joined["status"] == "away" and joined["phx_ref_prev"] == old
    assert joined["phx_ref"] != old
    assert [m.get("status") for m in await rt.get(Lobby, "hall").metas("ann")] == [None, "away"]

    await rt.gateway.message(tab2, {"event": "away"})  # untrack: a leave, no join
    [(_, diff)] = t1.take()
    assert diff["joins"] == {} and _refs(diff["leaves"]) == [joined["phx_ref"]]
    await rt.gateway.message(tab2, {"event": "away"})  # not tracked any more: no frame
    await rt.gateway.message(tab2, {"event": "also", "payload": "team-red"})  # another key
    [(_, diff)] = t1.take()
    assert list(diff["joins"]) == ["team-red"]
    await rt.gateway.detach(tab2)  # a connection leaves under every key it had
    [(_, diff)] = t1.take()
    assert list(diff["leaves"]) == ["team-red"]
    await rt.gateway.detach(tab1)


async def test_a_turn_that_raises_changes_no_presence_and_no_state(rt: Runtime) -> None:
    ann, a = await _join(rt, "ann")
    _, b = await _join(rt, None)  # a watcher: tracks nothing
    before = await rt.get(Lobby, "hall").who()
    await rt.gateway.message(ann, {"event": "status", "payload": "here"})
    a.take(), b.take()
    changes = (await rt.storage.load("lobby", "hall"))
    assert changes is not None and changes.state == {"changes": 1}
    with pytest.raises(RuntimeError, match="fails after tracking"):
        await rt.gateway.message(ann, {"event": "fail"})
    assert a.take() == [] and b.take() == []
    assert _metas(await rt.get(Lobby, "hall").who(), "ann") == [{"status": "here"}]
    assert before.keys() == {"ann"}
    stored = await rt.storage.load("lobby", "hall")
    assert stored is not None and stored.state == {"changes": 1}


class _Unjsonable:
    pass


@pytest.mark.parametrize(("key", "meta", "error", "match"), [
    ("ann", ["a", "list"], InvalidCall, "meta must be a dict"),
    ("ann", "text", InvalidCall, "meta must be a dict"),
    (42, {}, InvalidCall, "a presence key is a string"),
    ("", {}, InvalidCall, "a presence key is a string"),
    ("k" * 257, {}, InvalidCall, "a presence key is a string"),
    ("ann", {"phx_ref": "mine"}, InvalidCall, "'phx_ref' is set by the server"),
    ("ann", {"bio": "x" * MAX_META}, InvalidCall, f"the limit is {MAX_META}"),
    ("ann", {"score": math.nan}, UnstorableValue, "presence meta of 'ann'"),
    ("ann", {"what": _Unjsonable()}, UnstorableValue, "presence meta of 'ann'"),
    ("ann", {"nul": "a\x00b"}, UnstorableValue, "NUL"),
    ("a\x00n", {}, UnstorableValue, "NUL"),
])
async def test_bad_keys_and_metas_are_clear_errors_and_lose_nothing(
    rt: Runtime, key: Any, meta: Any, error: type[Exception], match: str
) -> None:
    ann, a = await _join(rt, "ann")
    _, w = await _join(rt, None)
    a.take(), w.take()
    Lobby.meta = meta
    try:
        with pytest.raises(error, match=match):
            await rt.gateway.message(ann, {"event": "bad", "payload": key})
    finally:
        Lobby.meta = None
    assert a.take() == [] and w.take() == []
    assert _metas(await rt.get(Lobby, "hall").who(), "ann") == [{"device": "web"}]
    stored = await rt.storage.load("lobby", "hall")
    assert stored is None or stored.state == {"changes": 0}  # the event's change rolled back
    await rt.gateway.message(ann, {"event": "status", "payload": "still fine"})
    assert [e for e, _ in w.take()] == [DIFF]


async def test_a_connection_has_at_most_max_keys(rt: Runtime) -> None:
    ann, _ = await _join(rt, "ann")
    for i in range(MAX_KEYS - 1):
        await rt.gateway.message(ann, {"event": "also", "payload": f"k{i}"})
    with pytest.raises(InvalidCall, match=f"at most {MAX_KEYS} keys"):
        await rt.gateway.message(ann, {"event": "also", "payload": "one-too-many"})
    await rt.gateway.message(ann, {"event": "status", "payload": "an update is fine"})
    assert len(await rt.get(Lobby, "hall").who()) == MAX_KEYS


async def test_a_meta_is_a_copy_the_app_cannot_change_afterwards(rt: Runtime) -> None:
    ann, _ = await _join(rt, "ann")
    meta: dict[str, Any] = {"tags": ["a"]}
    Lobby.meta = meta
    try:
        await rt.gateway.message(ann, {"event": "bad", "payload": "copy"})
    finally:
        Lobby.meta = None
    meta["tags"].append("changed later")
    listed = await rt.get(Lobby, "hall").who()
    assert _metas(listed, "copy") == [{"tags": ["a"]}]


# -- through a real session: the attached frame and the order of frames ---------------------


@pytest.fixture
def client(db_url: str) -> Any:
    objects = Objects(objects=[Lobby], database_url=db_url, create_tables=True)
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)
    with TestClient(app) as client:
        yield client


def test_the_state_comes_just_after_the_attached_frame_once_presence_is_in_use(
    client: TestClient,
) -> None:
    with client.websocket_connect("/objects/lobby/hall/ws") as watcher:
        attached = watcher.receive_json()
        # Nobody tracked yet: no state follows, and the attached frame says so.
        assert attached["event"] == "objects:attached" and "presence" not in attached["payload"]
        watcher.send_json({"ref": 1, "call": "who", "args": {}})
        assert watcher.receive_json() == {"ref": 1, "ok": True, "result": {}}
        with client.websocket_connect("/objects/lobby/hall/ws?user=ann") as ann:
            # Its own track in on_connect put the state among the held frames: it follows.
            first = ann.receive_json()
            assert first["event"] == "objects:attached" and first["payload"]["presence"] is True
            state, diff = ann.receive_json(), ann.receive_json()
            assert (state["event"], state["payload"]) == (STATE, {})
            assert diff["event"] == DIFF and list(diff["payload"]["joins"]) == ["ann"]
            # The watcher, attached before anyone tracked, gets the state before the diff.
            assert watcher.receive_json() == state
            assert watcher.receive_json() == diff
            with client.websocket_connect("/objects/lobby/hall/ws?user=bob") as bob:
                attached = bob.receive_json()
                assert attached["payload"]["presence"] is True
                state = bob.receive_json()
                assert state["event"] == STATE and list(state["payload"]) == ["ann"]
                joined = bob.receive_json()
                assert joined["event"] == DIFF and list(joined["payload"]["joins"]) == ["bob"]
                assert ann.receive_json() == joined
            left = ann.receive_json()  # bob's socket closed: his leave
            assert left["event"] == DIFF and list(left["payload"]["leaves"]) == ["bob"]
            assert watcher.receive_json() == joined
            assert watcher.receive_json() == left
        assert list(watcher.receive_json()["payload"]["leaves"]) == ["ann"]


def test_a_bad_meta_from_a_client_is_an_error_frame_and_the_socket_stays(
    client: TestClient,
) -> None:
    with client.websocket_connect("/objects/lobby/hall/ws?user=ann") as ann:
        for _ in range(3):  # attached, state, own join
            ann.receive_json()
        ann.send_json({"ref": "b", "event": "bad", "payload": 42})
        reply = ann.receive_json()
        assert reply["ok"] is False and reply["ref"] == "b"
        assert reply["error"]["type"] == "invalid_call"
        assert "a presence key is a string" in reply["error"]["message"]
        ann.send_json({"ref": "s", "event": "status", "payload": "ok"})
        diff = ann.receive_json()
        assert diff["event"] == DIFF
        assert diff["payload"]["joins"]["ann"]["metas"][0]["status"] == "ok"
        assert ann.receive_json() == {"ref": "s", "ok": True, "result": None}


# -- the JS client's presence (objects.js), driven by Node.js ----------------------------------

_JS_PRESENCE = r"""
require(process.argv[2]);
const p = new ObjectsClient.Presence();
const seen = [];
p.onJoin((key, current, joined) => seen.push(["join", key, joined.metas.map((m) => m.phx_ref)]));
p.onLeave((key, current, left) => seen.push(["leave", key, left.metas.map((m) => m.phx_ref),
                                            current.metas.map((m) => m.phx_ref)]));
p.onSync(() => seen.push(["sync", p.list().map((e) => [e.key, e.metas.map((m) => m.phx_ref)])]));
const meta = (ref, extra) => Object.assign({ phx_ref: ref }, extra || {});
const diff = (joins, leaves) => ({ event: "objects:presence_diff", payload: { joins, leaves } });
const state = (payload) => ({ event: "objects:presence_state", payload });
const step = (name, fn) => { seen.length = 0; fn(); console.log(JSON.stringify([name, seen])); };

step("attach", () => p.attached(true));
step("held diff", () => p.receive(diff({ bob: { metas: [meta("b1")] } }, {})));
step("state", () => p.receive(state({ ann: { metas: [meta("a1")] } })));
step("second tab", () => p.receive(diff({ ann: { metas: [meta("a2")] } }, {})));
step("update", () => p.receive(diff({ ann: { metas: [meta("a3", { phx_ref_prev: "a2" })] } },
                                   { ann: { metas: [meta("a2")] } })));
step("leave", () => p.receive(diff({}, { bob: { metas: [meta("b1")] } })));
step("reattach", () => p.attached(true));
step("new state", () => p.receive(state({ ann: { metas: [meta("a1")] },
                                         cy: { metas: [meta("c1")] } })));
step("empty reattach", () => p.attached(false));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_the_js_client_keeps_presence_like_phoenix(tmp_path: Path) -> None:
    js = Path(__file__).parents[1] / "fastapi_objects" / "fastapi" / "static" / "objects.js"
    driver = tmp_path / "presence.js"
    driver.write_text(_JS_PRESENCE)
    out = subprocess.run(["node", str(driver), str(js)], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    steps = {name: seen for name, seen in map(json.loads, out.splitlines())}
    assert steps["attach"] == []
    assert steps["held diff"] == []  # no state for this attach yet: held
    assert steps["state"] == [
        ["join", "ann", ["a1"]], ["join", "bob", ["b1"]],
        ["sync", [["ann", ["a1"]], ["bob", ["b1"]]]],
    ]
    assert steps["second tab"] == [["join", "ann", ["a2"]],
                                   ["sync", [["ann", ["a1", "a2"]], ["bob", ["b1"]]]]]
    assert steps["update"] == [
        ["join", "ann", ["a3"]], ["leave", "ann", ["a2"], ["a1", "a3"]],
        ["sync", [["ann", ["a1", "a3"]], ["bob", ["b1"]]]],
    ]
    assert steps["leave"] == [["leave", "bob", ["b1"], []], ["sync", [["ann", ["a1", "a3"]]]]]
    # A reconnect keeps the old presence until the new state, then tells only what changed.
    assert steps["reattach"] == []
    assert steps["new state"] == [
        ["join", "cy", ["c1"]], ["leave", "ann", ["a3"], ["a1"]],
        ["sync", [["ann", ["a1"]], ["cy", ["c1"]]]],
    ]
    # Attached with no state to follow: nobody is tracked, and whoever was shown leaves.
    assert steps["empty reattach"] == [
        ["leave", "ann", ["a1"], []], ["leave", "cy", ["c1"], []], ["sync", []],
    ]
