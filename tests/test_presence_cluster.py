"""Presence across two real nodes: Chromium pages and a `websockets` client, one node relaying.

Two uvicorn processes serve the example app on PostgreSQL (tests/_nodes.py). The room's owner
is the node its first visitor reached; clients of the other node ("edge") are relayed to it and
are ordinary sessions there, so they are in the room's presence like local ones. A ``kill -9``
of the edge closes its relays on the owner, and its clients leave.

The test is synchronous (Playwright's sync API, the browser fixture of test_browser.py); the
cluster's processes run from an event loop of their own in a thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import pytest
from websockets.sync.client import ClientConnection, connect

from example_app.sessions import SESSION_COOKIE
from fastapi_objects.storage import open_storage
from tests._nodes import Cluster
from tests.conftest import _exec
from tests.test_browser import Visitor, _expect, browser  # noqa: F401

pytestmark = [pytest.mark.postgres, pytest.mark.browser]
T = TypeVar("T")
WAIT = 15.0


class Nodes:
    """A ``Cluster`` in a fresh PostgreSQL schema, driven from synchronous code.

    Its processes and the schema are handled from an event loop of its own in a thread:
    Playwright's sync API already runs a loop in the test's thread.
    """

    def __init__(self, pg_url: str, names: list[str]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.pg_url = pg_url
        self.schema = f"t_{uuid.uuid4().hex[:12]}"
        self.run(self._create_schema())
        env = dict(os.environ, OBJECTS_DATABASE_URL=pg_url, OBJECTS_SCHEMA=self.schema)
        self.cluster = Cluster(env, names, ttl=2.0)
        self.run(self.cluster.__aenter__())

    async def _create_schema(self) -> None:
        await _exec(self.pg_url, f'CREATE SCHEMA "{self.schema}"')
        storage = open_storage(self.pg_url, schema=self.schema)
        await storage.create_tables()
        await storage.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def url(self, name: str) -> str:
        return self.cluster[name].url

    def stats(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = httpx2.get(self.url(name) + "/api/stats", timeout=10).json()
        return data

    def close(self) -> None:
        try:
            self.run(self.cluster.__aexit__(None, None, None))
            self.run(_exec(self.pg_url, f'DROP SCHEMA "{self.schema}" CASCADE'))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def nodes(pg_url: str) -> Iterator[Nodes]:
    started = Nodes(pg_url, ["owner", "edge"])
    try:
        yield started
    finally:
        started.close()


class Watcher:
    """A `websockets` client in the room, keeping the presence from the frames it gets."""

    def __init__(self, base_url: str, room: str, name: str) -> None:
        cookie = httpx2.get(f"{base_url}/rooms/{room}", timeout=10).cookies[SESSION_COOKIE]
        ws_url = base_url.replace("http://", "ws://") + f"/objects/chat_room/{room}/ws?name={name}"
        self._stack = ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(connect(
            ws_url, additional_headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}, open_timeout=WAIT
        ))
        self.presence: dict[str, list[dict[str, Any]]] = {}
        self.leaves: list[str] = []
        attached = self.next()
        assert attached["event"] == "objects:attached", attached
        self.connection = attached["payload"]["connection"]

    def next(self) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(self.ws.recv(timeout=WAIT))
        if frame.get("event") == "objects:presence_state":
            self.presence = {k: v["metas"] for k, v in frame["payload"].items()}
        elif frame.get("event") == "objects:presence_diff":
            for key, joined in frame["payload"]["joins"].items():
                self.presence.setdefault(key, []).extend(joined["metas"])
            for key, left in frame["payload"]["leaves"].items():
                gone = {m["phx_ref"] for m in left["metas"]}
                self.presence[key] = [m for m in self.presence.get(key, [])
                                      if m["phx_ref"] not in gone]
                if not self.presence[key]:
                    del self.presence[key]
                self.leaves.append(key)
        return frame

    def until(self, names: set[str], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while set(self.presence) != names:
            assert time.monotonic() < deadline, f"{what}: presence is {sorted(self.presence)}"
            self.next()

    def close(self) -> None:
        self._stack.close()


def _page(chromium: Any, base_url: str, tmp_path: Path, name: str, room: str) -> Visitor:
    visitor = Visitor(chromium, base_url, tmp_path, name.lower())
    visitor.page.goto(f"/rooms/{room}?name={name}")
    _expect()(visitor.page.locator("#status")).to_have_text("live")
    return visitor


def _shows(visitor: Visitor, names: list[str]) -> None:
    expect = _expect()
    present = visitor.page.locator("#present li")
    expect(present).to_have_count(len(names))
    expect(present).to_have_text([re.compile(rf"^{n}( \(you\))?$") for n in names])


def test_pages_and_a_websocket_client_through_two_nodes_see_joins_and_leaves_and_a_kill_9(
    nodes: Nodes, browser: Any, tmp_path: Path  # noqa: F811
) -> None:
    room = f"presence-{uuid.uuid4().hex[:6]}"
    # Ann reaches the owner first: the room is activated there.
    ann = _page(browser, nodes.url("owner"), tmp_path, "Ann", room)
    bob = cy = None
    try:
        _shows(ann, ["Ann"])
        bob = _page(browser, nodes.url("edge"), tmp_path, "Bob", room)  # relayed
        cy = Watcher(nodes.url("edge"), room, "Cy")  # relayed too
        cy.until({"Ann", "Bob", "Cy"}, "Cy sees everyone")
        for page in (ann, bob):
            _shows(page, ["Ann", "Bob", "Cy"])
        _expect()(bob.page.locator("#present li.me")).to_have_text("Bob (you)")
        assert nodes.stats("owner")["relayed"] == 2 and nodes.stats("edge")["relayed"] == 0

        bob.page.goto("/")  # Bob leaves, through the relay: everyone sees it
        cy.until({"Ann", "Cy"}, "Bob's leave")
        _shows(ann, ["Ann", "Cy"])
        bob.page.goto(f"/rooms/{room}")  # and comes back (his name is remembered)
        cy.until({"Ann", "Bob", "Cy"}, "Bob's return")
        _shows(ann, ["Ann", "Bob", "Cy"])
        ann.shot("three")

        # A second tab of Ann's is a second meta under her name: one entry, two metas.
        tab = ann.context.new_page()
        tab.goto(f"/rooms/{room}")
        _expect()(tab.locator("#status")).to_have_text("live")
        deadline = time.monotonic() + WAIT
        while len(cy.presence.get("Ann", [])) != 2:
            assert time.monotonic() < deadline, cy.presence
            cy.next()
        _shows(bob, ["Ann", "Bob", "Cy"])
        tab.close()

        # kill -9 of the relaying node: its clients (Bob's page, Cy) leave the room on the owner.
        watcher = Watcher(nodes.url("owner"), room, "Dee")
        watcher.until({"Ann", "Bob", "Cy", "Dee"}, "Dee sees everyone")
        nodes.cluster["edge"].signal(signal.SIGKILL)
        watcher.until({"Ann", "Dee"}, "the leaves of the dead node's clients")
        assert {"Bob", "Cy"} <= set(watcher.leaves)
        _shows(ann, ["Ann", "Dee"])
        ann.shot("after-kill")
        watcher.close()
    finally:
        if cy is not None:
            try:
                cy.close()
            except OSError:
                pass
        for visitor in (ann, bob):
            if visitor is not None:
                visitor.close()
    # Bob's page lost its node: its reconnect attempts are the only errors it may show.
    assert ann.errors == []
    assert bob is not None
    assert all("WebSocket" in e or "ERR_CONNECTION_REFUSED" in e for e in bob.errors), bob.errors
