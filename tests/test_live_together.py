"""Presence and state sync on one object, through the websocket route: each keeps its frames.

A room that syncs its state and tracks its visitors: a newcomer gets ``objects:attached``,
then its view (``objects:state``), then the presence as it was at the attach, then the diff of
its own ``track`` in ``on_connect``; a call's commit reaches the others as a
patch, and a leave as a presence diff, with neither frame standing in for the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from fastapi_objects import DurableObject, Objects, client_callable
from fastapi_objects.runtime.connection import Connection


class RoomState(BaseModel):
    messages: list[str] = []


class LiveRoom(DurableObject[RoomState]):
    public = True
    sync_state = True

    async def on_connect(self, conn: Connection) -> None:
        conn.track(conn.query.get("name", "anon"), {"tab": conn.id[:6]})

    @client_callable
    async def say(self, text: str) -> int:
        self.state.messages.append(text)
        return len(self.state.messages)


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    objects = Objects(objects=[LiveRoom], database_url=db_url)
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
