"""Hibernation with sockets open (``hibernate_with_clients``), with real parts.

Real ``websockets`` clients against uvicorn (tests/_server.py), TestClient websockets, and
nodes sharing SQLite or PostgreSQL for relays and moves. An object whose clients are idle
hibernates; their sockets stay open; the next frame thaws it, ``conn.state`` and ``tags``
intact and ``on_connect`` not run again; broadcasts reach every socket, asleep or not.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from fastapi_objects import Connection, DurableObject, Objects, client_callable, readonly
from fastapi_objects.runtime.placement import rendezvous
from fastapi_objects.runtime.sleepers import sleeps_with_clients
from tests._server import LiveServer
from tests._support import wait_until
from tests.conftest import Backend

WAIT = 15.0
CLIENTS = 50


class ChatState(BaseModel):
    said: list[str] = []


CONNECTS: list[str] = []  # names, in on_connect order (every node of the process)
DISCONNECTS: list[str] = []
LISTED_AT_ACTIVATE: list[list[str]] = []  # connections() as on_activate saw them


class Chat(DurableObject[ChatState]):
    idle_timeout = 0.3
    public = True

    async def on_activate(self) -> None:
        # (A client whose attach waits for this thaw is listed before its on_connect ran.)
        names = [c.state["name"] for c in self.connections() if c.state]
        LISTED_AT_ACTIVATE.append(sorted(names))

    async def on_connect(self, conn: Connection) -> None:
        CONNECTS.append(conn.query["name"])
        conn.state = {"name": conn.query["name"], "seen": 0}
        conn.tags.add("member")

    async def on_disconnect(self, conn: Connection) -> None:
        DISCONNECTS.append(conn.state["name"])
        self.broadcast("left", {"name": conn.state["name"]})

    async def on_message(self, conn: Connection, frame: dict[str, Any]) -> None:
        if frame["event"] == "whoami":
            conn.state = {**conn.state, "seen": conn.state["seen"] + 1}
            conn.send("you", {"state": conn.state, "tags": sorted(conn.tags)})
        elif frame["event"] == "note":
            self.state.said.append(frame["payload"])
            self.broadcast("said", {"text": frame["payload"]})

    @client_callable
    async def say(self, text: str) -> int:
        """Say ``text`` to everyone; how many members are attached on this node."""
        self.state.said.append(text)
        self.broadcast("said", {"text": text})
        return len(self.connections(tag="member"))

    @readonly
    @client_callable
    async def said(self) -> list[str]:
        return self.state.said


HIBERNATING = threading.Event()  # Slowpoke's on_hibernate is running
RELEASE = threading.Event()  # lets it finish


class Slowpoke(Chat):
    """A Chat whose hibernation waits for the test: frames race it."""

    async def on_hibernate(self) -> None:
        if RELEASE.is_set():
            return
        HIBERNATING.set()
        await asyncio.to_thread(RELEASE.wait, WAIT)  # (set from the test's thread)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    for seen in (CONNECTS, DISCONNECTS, LISTED_AT_ACTIVATE):
        seen.clear()
    HIBERNATING.clear()
    RELEASE.clear()


def _objects(backend: Backend, **options: Any) -> Objects:
    return Objects(objects=[Chat, Slowpoke], database_url=backend.url, schema=backend.schema,
                   create_tables=True, **options)


def _app(objects: Objects) -> FastAPI:
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)
    return app


async def _recv(ws: ClientConnection) -> dict[str, Any]:
    frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert isinstance(frame, dict)
    return frame


async def _next(ws: ClientConnection, event: str) -> Any:
    """The payload of the next ``event``; every other broadcast on the way fails the test."""
    frame = await _recv(ws)
    assert frame.get("event") == event, frame
    return frame["payload"]


async def _reply(ws: ClientConnection, ref: Any) -> Any:
    """The result of the reply to ``ref`` (broadcasts read on the way are dropped)."""
    while True:
        frame = await _recv(ws)
        if frame.get("ref") == ref and "ok" in frame:
            assert frame["ok"] is True, frame
            return frame["result"]


async def _attach(url: str) -> ClientConnection:
    ws = await connect(url, open_timeout=WAIT)
    assert (await _recv(ws))["event"] == "objects:attached"
    return ws


@asynccontextmanager
async def _clients(server: LiveServer, key: str, count: int) -> AsyncIterator[
    list[ClientConnection]
]:
    clients = await asyncio.gather(*(
        _attach(server.ws_url(f"/objects/chat/{key}/ws?name=c{i:02}")) for i in range(count)
    ))
    try:
        yield list(clients)
    finally:
        await asyncio.gather(*(ws.close() for ws in clients))


async def _asleep(objects: Objects, sleeping: int, hibernations: int) -> None:
    await wait_until(
        lambda: objects.stats().hibernations >= hibernations and objects.stats().active == 0
        and objects.stats().sleeping == sleeping,
        within=WAIT, what=f"hibernation {hibernations} with {sleeping} clients asleep",
    )


# -- one node, every backend -----------------------------------------------------------------


async def test_an_object_hibernates_with_50_clients_and_a_frame_wakes_it(
    backend: Backend,
) -> None:
    """50 real clients idle: the object hibernates, their sockets stay open. One frame thaws
    it once, with every connection listed again, its state and tags intact and no on_connect;
    every broadcast reaches every socket, in order, whether the object was asleep or not."""
    objects = _objects(backend)
    async with LiveServer(_app(objects)) as server, _clients(server, "r", CLIENTS) as clients:
        names = [f"c{i:02}" for i in range(CLIENTS)]
        await _asleep(objects, CLIENTS, 1)
        thaws = objects.stats().thaws
        # Listings (the inspector's) show the sleeping clients without waking the object.
        listed = await server.run(objects.connections(Chat, "r"))
        assert sorted(c["state"]["name"] for c in listed) == names
        assert objects.stats().thaws == thaws
        speaker = clients[7]
        # A call from a sleeping client: one thaw, everyone listed again (no on_connect).
        await speaker.send(json.dumps({"ref": 1, "call": "say", "args": {"text": "hello"}}))
        assert await _reply(speaker, 1) == CLIENTS
        assert objects.stats().thaws == thaws + 1
        assert sorted(CONNECTS) == names and LISTED_AT_ACTIVATE[-1] == names
        for ws in clients[:7] + clients[8:]:
            assert await _next(ws, "said") == {"text": "hello"}
        # An event frame after a second hibernation: conn.state and tags survived both.
        await _asleep(objects, CLIENTS, 2)
        await speaker.send(json.dumps({"event": "whoami"}))
        assert await _next(speaker, "you") == {
            "state": {"name": "c07", "seen": 1}, "tags": ["member"],
        }
        # Woken by the server (no client frame): its broadcast reaches every sleeping socket.
        await _asleep(objects, CLIENTS, 3)
        await server.run(objects.call(Chat, "r", "say", {"text": "from the server"}))
        for ws in clients:
            assert await _next(ws, "said") == {"text": "from the server"}
        await speaker.send(json.dumps({"event": "whoami"}))
        assert (await _next(speaker, "you"))["state"] == {"name": "c07", "seen": 2}
        # A sleeping client that leaves thaws the object to run on_disconnect.
        await _asleep(objects, CLIENTS, 4)
        await clients[0].close()
        for ws in clients[1:]:
            assert await _next(ws, "left") == {"name": "c00"}
        assert DISCONNECTS == ["c00"]
        assert objects.stats().thaws == thaws + 4  # one per wake, whatever woke it
        assert sorted(CONNECTS) == names
        # The object's own state went through every hibernation (memory:// keeps it in the
        # process too: only persistence = "memory" objects start fresh).
        assert await server.run(objects.call(Chat, "r", "said", {})) == [
            "hello", "from the server",
        ]


async def test_a_frame_racing_the_hibernation_runs_once_in_order(backend: Backend) -> None:
    """Frames sent while the object is hibernating (on_hibernate running, the gate held)
    and just after it left memory each run exactly once, in the order they were sent."""
    objects = _objects(backend)
    async with LiveServer(_app(objects)) as server:
        url = server.ws_url("/objects/slowpoke/race/ws?name=")
        speaker, other = await _attach(url + "ann"), await _attach(url + "bob")
        try:
            await wait_until(HIBERNATING.is_set, within=WAIT, what="on_hibernate")
            thaws = objects.stats().thaws
            await speaker.send(json.dumps({"ref": 1, "call": "say", "args": {"text": "a"}}))
            await speaker.send(json.dumps({"ref": 2, "event": "note", "payload": "b"}))
            await speaker.send(json.dumps({"ref": 3, "call": "say", "args": {"text": "c"}}))
            await asyncio.sleep(0.1)  # they wait at the gate the hibernation holds
            RELEASE.set()
            await wait_until(lambda: objects.stats().hibernations == 1, within=WAIT,
                             what="the hibernation")
            await speaker.send(json.dumps({"ref": 4, "call": "say", "args": {"text": "d"}}))
            for ref in (1, 2, 3, 4):
                await _reply(speaker, ref)
            texts = [(await _next(other, "said"))["text"] for _ in range(4)]
            assert texts == ["a", "b", "c", "d"]
            assert await server.run(objects.call(Slowpoke, "race", "said", {})) == texts
            assert objects.stats().thaws == thaws + 1
            assert CONNECTS == ["ann", "bob"]
        finally:
            await asyncio.gather(speaker.close(), other.close())


def test_testclient_clients_sleep_and_wake_too(db_url: str) -> None:
    objects = Objects(objects=[Chat], database_url=db_url)
    with TestClient(_app(objects)) as client, client.websocket_connect(
        "/objects/chat/t/ws?name=ann"
    ) as ann, client.websocket_connect("/objects/chat/t/ws?name=bob") as bob:
        for ws in (ann, bob):
            assert ws.receive_json()["event"] == "objects:attached"
        deadline = time.monotonic() + WAIT
        while objects.stats().sleeping < 2:
            assert time.monotonic() < deadline, objects.stats()
            time.sleep(0.01)
        assert objects.stats().active == 0
        ann.send_json({"event": "whoami"})
        assert ann.receive_json()["payload"]["state"] == {"name": "ann", "seen": 1}
        ann.send_json({"ref": 1, "call": "say", "args": {"text": "hi"}})
        assert bob.receive_json()["payload"] == {"text": "hi"}
        assert objects.stats().thaws == 2 and CONNECTS == ["ann", "bob"]


async def test_hibernate_with_clients_false_keeps_the_object_awake(db_url: str) -> None:
    class Awake(Chat):
        hibernate_with_clients = False

    objects = Objects(objects=[Awake], database_url=db_url)
    async with LiveServer(_app(objects)) as server:
        ws = await _attach(server.ws_url("/objects/awake/k/ws?name=ann"))
        try:
            await asyncio.sleep(Awake.idle_timeout * 4)
            assert (objects.stats().hibernations, objects.stats().active) == (0, 1)
        finally:
            await ws.close()
        await _asleep(objects, 0, 1)


def test_only_durable_objects_that_do_not_expire_sleep_with_their_clients() -> None:
    class Memo(Chat):
        persistence = "memory"

    class Expiring(Chat):
        expire_after = timedelta(hours=1)

    assert sleeps_with_clients(Chat) and DurableObject.hibernate_with_clients is True
    assert not sleeps_with_clients(Memo) and not sleeps_with_clients(Expiring)


# -- several nodes: relays and moves ---------------------------------------------------------


async def test_a_relayed_client_sleeps_on_the_owner_and_its_frame_wakes_it(
    sql_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attached through another node (relayed): the session sleeps on the owner, the relay
    stays open, and the client's next frame thaws the object on the owner."""
    # Hash placement and a key the owner wins: the object lives on the owner whichever node
    # a call lands on, however long the edge takes to start (no race with its idle timeout).
    monkeypatch.setattr(Chat, "placement", "hash")
    key = next(f"rel{i}" for i in range(100) if rendezvous(f"chat:rel{i}", ["owner", "edge"])
               == "owner")
    owner = _objects(sql_backend, node_id="owner")
    edge = _objects(sql_backend, node_id="edge")
    async with owner:
        assert await owner.call(Chat, key, "say", {"text": "x"}) == 0
        await wait_until(lambda: owner.stats().hibernations == 1, within=WAIT)
        async with LiveServer(_app(edge)) as server:
            await wait_until(lambda: "owner" in edge.runtime._host.routing.node.live,
                             within=WAIT, what="the edge sees the owner")
            ws = await _attach(server.ws_url(f"/objects/chat/{key}/ws?name=ann"))
            try:
                assert owner.stats().relayed == 1 and owner.stats().thaws == 2
                await _asleep(owner, 1, 2)
                await ws.send(json.dumps({"event": "whoami"}))
                assert await _next(ws, "you") == {
                    "state": {"name": "ann", "seen": 1}, "tags": ["member"],
                }
                await ws.send(json.dumps({"ref": 1, "call": "say", "args": {"text": "y"}}))
                assert await _reply(ws, 1) == 1
                assert owner.stats().thaws == 3 and CONNECTS == ["ann"]
                assert edge.stats().active == 0 and edge.stats().thaws == 0
            finally:
                await ws.close()


async def test_a_sleeping_clients_frame_that_finds_the_object_elsewhere_closes_1012(
    sql_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The object hibernated on node A with a client asleep there, then thawed on node B.
    The client's next frame does not run: it is closed 1012, and reconnecting through A
    it is relayed to B."""
    a = _objects(sql_backend, node_id="a")
    b = _objects(sql_backend, node_id="b")
    async with b, LiveServer(_app(a)) as server:
        url = server.ws_url("/objects/chat/mv/ws?name=ann")
        ws = await _attach(url)
        try:
            await _asleep(a, 1, 1)
            monkeypatch.setattr(Chat, "idle_timeout", 60.0)  # B keeps it while we look
            assert await b.call(Chat, "mv", "say", {"text": "on b"}) == 0
            await ws.send(json.dumps({"ref": 1, "call": "say", "args": {"text": "lost"}}))
            with pytest.raises(ConnectionClosed):
                while True:
                    await _recv(ws)
            assert ws.close_code == 1012 and "moved" in (ws.close_reason or "")
        finally:
            await ws.close()
        assert a.stats().sleeping == 0
        assert await b.call(Chat, "mv", "said", {}) == ["on b"]  # the frame did not run
        again = await _attach(url)
        try:
            await again.send(json.dumps({"ref": 1, "call": "say", "args": {"text": "back"}}))
            assert await _reply(again, 1) == 1  # attached on B, through A's relay
            assert b.stats().relayed == 1
        finally:
            await again.close()
        assert await b.call(Chat, "mv", "said", {}) == ["on b", "back"]


def test_an_object_with_clients_makes_room_under_max_active_and_its_sockets_stay(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At ``max_active`` an object whose clients are idle is evicted like one without: its
    client sleeps, and its next frame brings it back (evicting the other in turn)."""
    monkeypatch.setattr(Chat, "idle_timeout", 60.0)  # only eviction makes them leave
    objects = Objects(objects=[Chat], database_url=db_url, max_active=1)
    with TestClient(_app(objects)) as client, client.websocket_connect(
        "/objects/chat/a/ws?name=ann"
    ) as ann:
        assert ann.receive_json()["event"] == "objects:attached"
        portal = client.portal
        assert portal is not None
        assert portal.call(objects.call, Chat, "b", "say", {"text": "to b"}) == 0
        stats = objects.stats()
        assert (stats.evictions, stats.active, stats.sleeping) == (1, 1, 1)
        ann.send_json({"event": "whoami"})
        assert ann.receive_json()["payload"]["state"] == {"name": "ann", "seen": 1}
        assert objects.stats().evictions == 2 and CONNECTS == ["ann"]
