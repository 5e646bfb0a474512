"""Presence and state sync on one object, through the websocket route: each keeps its frames.

A room that syncs its state and tracks its visitors: a newcomer gets ``objects:attached``,
then its view (``objects:state``), then the presence as it was at the attach, then the diff of
its own ``track`` in ``on_connect``; a call's commit reaches the others as a
patch, and a leave as a presence diff, with neither frame standing in for the other.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from websockets.asyncio.client import connect

from fastapi_objects import DurableObject, Objects, client_callable
from fastapi_objects.runtime.connection import Connection
from tests._server import LiveServer
from tests._sync import Board, Mirror, random_step, same_json
from tests.conftest import Backend


class RoomState(BaseModel):
    messages: list[str] = []


class LiveRoom(DurableObject[RoomState]):
    public = True
    sync_state = True
    idle_timeout = 0.2  # idle clients do not keep it awake: it hibernates with them

    async def on_connect(self, conn: Connection) -> None:
        if "name" in conn.query:  # a watcher (no name) looks on without being in the room
            conn.track(conn.query["name"], {"tab": conn.id[:6]})

    @client_callable
    async def say(self, text: str) -> int:
        self.state.messages.append(text)
        return len(self.state.messages)


@pytest.fixture
def objects(db_url: str) -> Objects:
    return Objects(objects=[LiveRoom], database_url=db_url)


@pytest.fixture
def client(objects: Objects) -> Iterator[TestClient]:
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)
    with TestClient(app) as test_client:
        yield test_client


def _until(ws: Any, event: str) -> dict[str, Any]:
    while True:
        frame = ws.receive_json()
        if frame.get("event") == event:
            return dict(frame)


def test_a_newcomer_gets_attached_then_its_view_then_the_presence(client: TestClient) -> None:
    with client.websocket_connect("/objects/live_room/r/ws?name=ann") as ann:
        attached = ann.receive_json()
        assert attached["event"] == "objects:attached" and attached["payload"]["presence"]
        state = ann.receive_json()
        assert state["event"] == "objects:state" and state["payload"]["state"] == {
            "messages": []}
        presence = ann.receive_json()
        assert presence["event"] == "objects:presence_state"
        assert presence["payload"] == {}  # as it was at the attach: on_connect's track follows
        own = ann.receive_json()
        assert own["event"] == "objects:presence_diff"
        assert list(own["payload"]["joins"]) == ["ann"]


def test_patches_and_presence_diffs_reach_the_others_each_in_its_frame(
    client: TestClient,
) -> None:
    with client.websocket_connect("/objects/live_room/r/ws?name=ann") as ann:
        view = _until(ann, "objects:state")["payload"]["state"]
        _until(ann, "objects:presence_state")
        assert list(_until(ann, "objects:presence_diff")["payload"]["joins"]) == ["ann"]
        with client.websocket_connect("/objects/live_room/r/ws?name=bob") as bob:
            _until(bob, "objects:presence_state")
            joins = _until(ann, "objects:presence_diff")["payload"]
            assert list(joins["joins"]) == ["bob"] and joins["leaves"] == {}
            bob.send_json({"ref": 1, "call": "say", "args": {"text": "hi"}})
            patch = _until(ann, "objects:state_patch")["payload"]
            view = jsonpatch.apply_patch(view, patch["patch"])
            assert view == {"messages": ["hi"]}
        leaves = _until(ann, "objects:presence_diff")["payload"]
        assert list(leaves["leaves"]) == ["bob"] and leaves["joins"] == {}
        ann.send_json({"ref": 2, "call": "say", "args": {"text": "bye"}})
        patch = _until(ann, "objects:state_patch")["payload"]
        assert jsonpatch.apply_patch(view, patch["patch"]) == {"messages": ["hi", "bye"]}


def _asleep(objects: Objects, clients: int) -> None:
    deadline = time.monotonic() + 15
    while objects.stats().sleeping < clients or objects.stats().active:
        assert time.monotonic() < deadline, objects.stats()
        time.sleep(0.01)


def test_after_a_hibernation_with_sockets_open_views_and_presence_carry_on(
    client: TestClient, objects: Objects,
) -> None:
    with client.websocket_connect("/objects/live_room/r/ws?name=ann") as ann, \
            client.websocket_connect("/objects/live_room/r/ws?name=bob") as bob:
        views = {}
        for name, ws in (("ann", ann), ("bob", bob)):
            views[name] = _until(ws, "objects:state")["payload"]["state"]
        _until(bob, "objects:presence_state")
        ann.send_json({"ref": 1, "call": "say", "args": {"text": "before"}})
        for name, ws in (("ann", ann), ("bob", bob)):
            patch = _until(ws, "objects:state_patch")["payload"]["patch"]
            views[name] = jsonpatch.apply_patch(views[name], patch)
        _asleep(objects, 2)
        thaws = objects.stats().thaws
        # Bob's call wakes the room: Ann's socket slept through it and still gets the patch.
        bob.send_json({"ref": 2, "call": "say", "args": {"text": "after"}})
        for name, ws in (("ann", ann), ("bob", bob)):
            patch = _until(ws, "objects:state_patch")["payload"]["patch"]
            views[name] = jsonpatch.apply_patch(views[name], patch)
            assert views[name] == {"messages": ["before", "after"]}, name
        assert objects.stats().thaws == thaws + 1
        # A newcomer after the thaw sees both sleepers in the presence, at once.
        with client.websocket_connect("/objects/live_room/r/ws") as cy:
            attached = cy.receive_json()
            assert attached["payload"].get("presence") is True
            state = _until(cy, "objects:presence_state")["payload"]
            assert sorted(state) == ["ann", "bob"]


async def test_state_sync_and_its_resume_through_a_relaying_node(sql_backend: Backend) -> None:
    """A client attached through a node that does not own the object (relayed to the owner)
    follows the state, and resumes by rev through the relay: one patch, not the whole view."""
    owner = Objects(objects=[Board], database_url=sql_backend.url, schema=sql_backend.schema,
                    node_id="owner", create_tables=True)
    edge = Objects(objects=[Board], database_url=sql_backend.url, schema=sql_backend.schema,
                   node_id="edge")
    app = FastAPI(lifespan=edge.lifespan)
    app.include_router(edge.router)
    rnd = random.Random(7)
    mirror = Mirror()

    async def frame(ws: Any) -> dict[str, Any]:
        return dict(json.loads(await asyncio.wait_for(ws.recv(), 10)))

    async def calls(ws: Any, count: int) -> None:
        for ref in range(count):
            await ws.send(json.dumps({"ref": ref, "call": "step", "args": random_step(rnd)}))
            while "ok" not in (got := await frame(ws)):
                assert mirror.feed(got), got
            assert got["ref"] == ref

    async with owner:
        await owner.get(Board, "b").step(op="set", n=1)  # the owner holds it
        async with LiveServer(app) as server:
            async with connect(server.ws_url("/objects/board/b/ws")) as ws:
                assert (await frame(ws))["event"] == "objects:attached"
                assert mirror.feed(await frame(ws)) and mirror.states == 1
                await calls(ws, 50)
            for n in range(5):  # changes while the client is away
                await owner.get(Board, "b").step(op="push", text=f"away {n}")
            path = f"/objects/board/b/ws?{mirror.resume_query()}"
            async with connect(server.ws_url(path)) as ws:
                assert (await frame(ws))["event"] == "objects:attached"
                resumed = await frame(ws)
                assert resumed["event"] == "objects:state_patch", resumed
                mirror.feed(resumed)
                await calls(ws, 50)
        assert owner.stats().relayed == 2 and mirror.states == 1
        server_view = await owner.get(Board, "b").view()
    assert same_json(mirror.view, server_view)
