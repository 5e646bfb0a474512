"""State sync: objects:state on attach, objects:state_patch after each commit, resume, requests.

The runtime tests attach a client as the websocket session does (``gateway.attach``, then
``gateway.state_frames``) on every backend; the TestClient tests go through the websocket
route. Every patch is applied with ``jsonpatch`` (an independent RFC 6902 implementation).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastapi_objects import Objects, Runtime
from fastapi_objects.runtime.connection import Connection
from fastapi_objects.runtime.sync import HISTORY
from fastapi_objects.runtime.sync.jsondiff import diff
from tests._support import Recorder, wait_until
from tests._sync import Board, Mirror, Notes, Plain, Sleepy, random_step, same_json
from tests.conftest import Backend
from tests.test_storage_faults import _writes_held

CALLS = 1_000


@asynccontextmanager
async def _runtime(backend: Backend, **options: Any) -> AsyncIterator[Runtime]:
    async with Runtime(objects=[Board, Notes, Plain, Sleepy], database_url=backend.url,
                       schema=backend.schema, create_tables=True, **options) as rt:
        yield rt


async def _attach(rt: Runtime, key: str, query: dict[str, str] | None = None,
                  cls: Any = Board) -> tuple[Connection, Recorder]:
    """Attach as the session does: the attach, then the state frames right after it."""
    client = Recorder()
    conn = await rt.gateway.attach(cls, key, client, query=query)
    for text in await rt.gateway.state_frames(conn):
        client.send_text(text)
    return conn, client


async def _run_calls(rt: Runtime, key: str, rnd: random.Random, count: int) -> None:
    handle = rt.get(Board, key)
    for _ in range(count):
        try:
            await handle.step(**random_step(rnd))
        except ValueError:
            pass  # "fail": rolled back, nothing sent


def _follow(mirror: Mirror, client: Recorder) -> None:
    for frame in client.frames:
        mirror.feed(frame)
    client.frames.clear()


async def test_a_client_follows_1000_random_calls_and_resumes_mid_run(backend: Backend) -> None:
    """The client's view equals the server's state after 1,000 calls and a reconnect."""
    rnd = random.Random(17)
    async with _runtime(backend) as rt:
        conn, client = await _attach(rt, "b")
        assert client.frames[0]["event"] == "objects:state"
        mirror = Mirror()
        await _run_calls(rt, "b", rnd, CALLS // 2)
        _follow(mirror, client)
        assert mirror.states == 1 and mirror.patches > 100
        await rt.gateway.detach(conn)
        await _run_calls(rt, "b", rnd, 5)  # while it is away (no client: no view computed)
        held = mirror.rev
        conn, client = await _attach(rt, "b", {"objects_rev": str(held),
                                               "objects_run": str(mirror.run)})
        assert [f["event"] for f in client.frames] == ["objects:state_patch"], client.frames
        assert client.frames[0]["payload"]["base"] == held
        await _run_calls(rt, "b", rnd, CALLS // 2)
        _follow(mirror, client)
        server = await rt.get(Board, "b").view()
        assert same_json(mirror.view, server)
        assert mirror.states == 1  # the resume was a patch, not the whole view
        stored = await rt.storage.load("board", "b")
        assert stored is not None and mirror.rev <= stored.rev


async def test_a_patch_never_leaves_before_its_commit(sql_backend: Backend) -> None:
    """The output gate: with the database's write lock held elsewhere, the turns are done
    (pipelined) but their patches wait for the commit, as their callers do."""
    async with _runtime(sql_backend) as rt:
        handle = rt.get(Board, "g")
        await handle.step(op="set", n=1)
        _, client = await _attach(rt, "g")
        client.frames.clear()
        async with _writes_held(sql_backend):
            calls = asyncio.gather(*(handle.step(op="set", n=n) for n in (2, 3)))
            await asyncio.sleep(0.3)
            assert client.frames == [] and not calls.done()
        await calls
        assert [f["payload"]["patch"][0]["value"] for f in client.frames] == [2, 3]
        stored = await rt.storage.load("board", "g")
        assert stored is not None and stored.rev == client.frames[-1]["payload"]["rev"]


async def test_the_rev_never_goes_back_across_hibernation(backend: Backend) -> None:
    async with _runtime(backend) as rt:
        conn, client = await _attach(rt, "h", cls=Sleepy)
        await rt.get(Sleepy, "h").step(op="set", n=5)
        mirror = Mirror()
        _follow(mirror, client)
        before = mirror.rev
        assert before is not None and before >= 1
        await rt.gateway.detach(conn)
        await wait_until(lambda: rt.stats().hibernations == 1, what="hibernation")
        # After hibernation the history is gone: a resume gets the whole view, at the same rev.
        conn, client = await _attach(rt, "h", {"objects_rev": str(before),
                                               "objects_run": str(mirror.run)}, Sleepy)
        frame = client.frames[0]
        assert frame["event"] == "objects:state" and frame["payload"]["run"] != mirror.run
        assert frame["payload"]["rev"] == before and frame["payload"]["state"]["value"] == 5
        await rt.get(Sleepy, "h").step(op="set", n=6)
        assert client.frames[1]["payload"]["rev"] > before


async def test_a_view_per_connection_shows_each_client_its_own(backend: Backend) -> None:
    async with _runtime(backend) as rt:
        _ann_conn, ann = await _attach(rt, "n", {"user": "ann"}, Notes)
        _bob_conn, bob = await _attach(rt, "n", {"user": "bob"}, Notes)
        for client in (ann, bob):
            assert client.frames.pop()["payload"]["state"] == {"mine": []}
        await rt.get(Notes, "n").add(owner="ann", text="milk")
        await rt.get(Notes, "n").add(owner="ann", text="eggs")
        assert bob.frames == []  # bob's view did not change: nothing sent, secret never
        patches = [f["payload"] for f in ann.frames]
        assert [p["patch"] for p in patches] == [
            [{"op": "add", "path": "/mine/0", "value": "milk"}],
            [{"op": "add", "path": "/mine/1", "value": "eggs"}],
        ]
        assert patches[1]["base"] == patches[0]["rev"]
        assert "hidden" not in json.dumps(ann.frames) + json.dumps(bob.frames)
        await rt.get(Notes, "n").add(owner="bob", text="tea")
        assert [f["payload"]["patch"] for f in bob.frames] == [
            [{"op": "add", "path": "/mine/0", "value": "tea"}]]


async def test_classes_that_do_not_sync_send_nothing_more(backend: Backend) -> None:
    async with _runtime(backend) as rt:
        conn, client = await _attach(rt, "p", cls=Plain)
        await rt.get(Plain, "p").step(n=3)
        assert client.frames == [] and conn.sync_rev is None
        assert conn.activation is not None and conn.activation.sync is None


# -- the patches themselves -------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.5, 1.0])
    | st.text("ab/~", max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text("ab/~", max_size=2),
                                                               inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_json, min_size=2, max_size=6))
def test_a_diff_applied_to_the_old_document_gives_the_new(documents: list[Any]) -> None:
    import jsonpatch

    for old, new in itertools.pairwise(documents):
        assert same_json(jsonpatch.apply_patch(old, diff(old, new)), new)


_steps = st.lists(st.tuples(st.sampled_from(["f1", "f2", "a/b", "x~y", "new"]), _json),
                  min_size=1, max_size=12)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_steps)
def test_every_patch_sent_turns_the_previous_view_into_the_new(steps: list[Any]) -> None:
    """Each patch applied to the view before it equals the server's state at its rev."""

    async def run() -> None:
        async with _runtime(Backend("memory", "memory://")) as rt:
            _conn, client = await _attach(rt, "h")
            views = {client.frames[0]["payload"]["rev"]: client.frames[0]["payload"]["state"]}
            handle = rt.get(Board, "h")
            for key, value in steps:
                await handle.step(op="field", key=key, text=json.dumps(value))
                stored = await rt.storage.load("board", "h")
                assert stored is not None
                views[stored.rev] = await handle.view()
            mirror = Mirror()
            for frame in client.frames:
                previous = mirror.view
                mirror.feed(frame)
                if frame["event"] == "objects:state_patch":
                    assert frame["payload"]["patch"], "an empty patch was sent"
                    assert previous is not None
                assert same_json(mirror.view, views[frame["payload"]["rev"]])

    asyncio.run(run())


# -- through the websocket route --------------------------------------------------------------


def _app(db_url: str) -> tuple[FastAPI, Objects]:
    objects = Objects(objects=[Board, Notes, Plain], database_url=db_url)
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)
    return app, objects


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    app, _ = _app(db_url)
    with TestClient(app) as test_client:
        yield test_client


@contextmanager
def _ws(client: TestClient, query: str = "", path: str = "/objects/board/t/ws") -> Iterator[Any]:
    with client.websocket_connect(path + ("?" + query if query else "")) as ws:
        assert ws.receive_json()["event"] == "objects:attached"
        yield ws


def _reply(ws: Any, ref: Any, mirror: Mirror | None = None) -> dict[str, Any]:
    while True:
        frame = ws.receive_json()
        if mirror is not None and mirror.feed(frame):
            continue
        if frame.get("ref") == ref and "ok" in frame:
            return dict(frame)
        assert "ok" not in frame, frame


def test_state_follows_the_attached_frame_and_patches_follow_commits(client: TestClient) -> None:
    rnd = random.Random(3)
    mirror = Mirror()
    with _ws(client) as ws:
        assert mirror.feed(ws.receive_json())  # right after objects:attached
        for ref in range(CALLS // 2):
            ws.send_json({"ref": ref, "call": "step", "args": random_step(rnd)})
            _reply(ws, ref, mirror)
        query = mirror.resume_query()
    with _ws(client) as other:  # changes while the first client is away
        other.receive_json()
        for ref in range(20):
            other.send_json({"ref": ref, "call": "step", "args": random_step(rnd)})
            _reply(other, ref)
    with _ws(client, query) as ws:
        first = ws.receive_json()
        assert first["event"] == "objects:state_patch", first  # one patch, not the whole view
        mirror.feed(first)
        for ref in range(CALLS // 2):
            ws.send_json({"ref": ref, "call": "step", "args": random_step(rnd)})
            _reply(ws, ref, mirror)
        ws.send_json({"ref": "v", "call": "view"})
        server = _reply(ws, "v", mirror)["result"]
    assert same_json(mirror.view, server) and mirror.states == 1


def test_a_resume_gets_the_whole_view_when_that_is_smaller(client: TestClient) -> None:
    mirror = Mirror()
    with _ws(client) as ws:
        mirror.feed(ws.receive_json())
        query = mirror.resume_query()
    with _ws(client) as ws:
        ws.receive_json()
        for ref in range(HISTORY // 2):  # many small patches that add up past the view
            ws.send_json({"ref": ref, "call": "step", "args": {"op": "set", "n": ref + 1}})
            _reply(ws, ref)
    with _ws(client, query) as ws:
        frame = ws.receive_json()
        assert frame["event"] == "objects:state" and frame["payload"]["state"]["value"] == 32


@pytest.mark.parametrize("rev", ["abc", "-1", "1.5", "1e3", "", "\u0661", str(2**53 + 1)])
def test_a_malformed_rev_is_told_and_the_whole_view_follows(client: TestClient, rev: str) -> None:
    with _ws(client, f"objects_rev={rev}&objects_run=x") as ws:
        error = ws.receive_json()
        assert error["ok"] is False and error["error"]["type"] == "invalid_rev", error
        assert "objects_rev" in error["error"]["message"]
        assert ws.receive_json()["event"] == "objects:state"
        ws.send_json({"ref": 1, "call": "step", "args": {"op": "set", "n": 4}})
        assert ws.receive_json()["event"] == "objects:state_patch"  # it goes on as usual
        assert _reply(ws, 1)["result"] == 4


@pytest.mark.parametrize("query", ["objects_rev=999&objects_run={run}",
                                   "objects_rev=0&objects_run=other", "objects_rev=0"])
def test_a_rev_from_elsewhere_gets_the_whole_view(client: TestClient, query: str) -> None:
    with _ws(client) as ws:
        run = ws.receive_json()["payload"]["run"]
    with _ws(client, query.format(run=run)) as ws:
        frame = ws.receive_json()
        assert frame["event"] == "objects:state", frame  # no error: the view is simply whole


def test_a_state_request_flood_is_refused_past_one_and_loses_nothing(client: TestClient) -> None:
    mirror = Mirror()
    with _ws(client) as ws:
        mirror.feed(ws.receive_json())
        for _ in range(200):
            ws.send_json({"event": "objects:state_request"})
        ws.send_json({"ref": "x", "call": "step", "args": {"op": "push", "text": "after"}})
        states, refused = 0, 0
        while True:
            frame = ws.receive_json()
            if frame.get("ref") == "x":
                break
            if mirror.feed(frame):
                states += frame["event"] == "objects:state"
            else:
                assert frame["error"]["type"] == "overloaded", frame
                refused += 1
        assert states + refused == 200 and states >= 1
        ws.send_json({"ref": "v", "call": "view"})
        assert same_json(mirror.view, _reply(ws, "v", mirror)["result"])


def test_a_state_request_is_answered_and_other_protocol_events_are_refused(
    client: TestClient,
) -> None:
    with _ws(client) as ws:
        ws.receive_json()
        ws.send_json({"ref": 1, "event": "objects:state_request"})
        assert ws.receive_json()["event"] == "objects:state"
        assert ws.receive_json() == {"ref": 1, "ok": True, "result": None}
        ws.send_json({"ref": 2, "event": "objects:state", "payload": {"rev": 0, "state": {}}})
        assert ws.receive_json()["error"]["type"] == "invalid_frame"  # clients write no state
    with _ws(client, path="/objects/plain/t/ws") as ws:
        ws.send_json({"ref": 3, "event": "objects:state_request"})
        error = ws.receive_json()
        assert error["ref"] == 3 and error["error"]["type"] == "invalid_frame", error
        assert "does not sync its state" in error["error"]["message"]
