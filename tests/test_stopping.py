"""A node that is stopping activates nothing more: what it would thaw then, it could neither
hibernate nor commit. Its own calls fail at once, a peer's calls are told "moved" (they look
again), and its thawer and committer, once closed, fail a late caller instead of hanging it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from fastapi_objects import DurableObject, Objects, Runtime
from fastapi_objects._exceptions import StorageUnavailable
from fastapi_objects.cluster import Moved
from fastapi_objects.runtime.committer import GroupCommitter
from fastapi_objects.runtime.placement import rendezvous
from fastapi_objects.storage import Commit
from tests._apps import Counter, CounterState
from tests._server import LiveServer
from tests._support import Recorder, wait_until
from tests.conftest import Backend

RELEASE: asyncio.Event  # made by each test, on its own event loop


class Holder(DurableObject[CounterState]):
    """Its hibernation waits for the test: the stop is held in the middle."""

    type_name = "holder"

    async def touch(self) -> int:
        self.state.value += 1
        return self.state.value

    async def on_hibernate(self) -> None:
        await RELEASE.wait()


def _rt(backend: Backend) -> Runtime:
    return Runtime(objects=[Counter, Holder], database_url=backend.url, schema=backend.schema,
                   create_tables=True)


@asynccontextmanager
async def _in_its_stop(backend: Backend) -> AsyncIterator[Runtime]:
    """A runtime whose stop has begun and is held open by a hibernation (``Holder``)."""
    global RELEASE
    RELEASE = asyncio.Event()
    rt = _rt(backend)
    await rt.start()
    stopping = None
    try:
        assert await rt.get(Counter, "kept").increment(1) == 1  # live: it hibernates in the stop
        assert await rt.get(Holder, "h").touch() == 1
        stopping = asyncio.create_task(rt.close())
        await wait_until(lambda: rt._host.stopping, what="the stop to begin")
        yield rt
    finally:
        RELEASE.set()
        await (stopping if stopping is not None else rt.close())


async def test_a_stopping_node_activates_nothing_and_answers_at_once(backend: Backend) -> None:
    async with _in_its_stop(backend) as rt:
        async with asyncio.timeout(10):  # answered at once, not left waiting
            with pytest.raises(StorageUnavailable, match="is stopping"):
                await rt.get(Counter, "new").increment(1)
            with pytest.raises(Moved, match="is leaving"):
                await rt._host.calls.serve_forwarded("counter", "other", "increment", {"by": 1})
        assert rt.stats().active <= 2  # nothing was activated for them
    if backend.name == "memory":
        return  # (memory storage ends with its runtime)
    async with _rt(backend) as again:  # what ran before the stop is kept; the refused ran not
        assert await again.get(Counter, "kept").get() == 1
        assert await again.get(Counter, "new").get() == 0
        assert await again.get(Counter, "other").get() == 0


async def test_a_closed_thawer_and_committer_fail_a_late_caller(backend: Backend) -> None:
    rt = _rt(backend)
    async with rt:
        await rt.get(Counter, "c").increment(1)
        record = rt._host.activations[("counter", "c")].record  # a live object's
        committer = GroupCommitter(rt.storage, 8, rt.node_id)
        committer.start()
        await committer.close()
        commit = Commit("counter", "c", record.rev, record.rev + 1, b'{"value": 9}', 1, 0, 0,
                        epoch=record.epoch)
        pending = committer.submit(record, commit)
        assert pending.done and isinstance(pending.error, StorageUnavailable)
        assert "committer is stopped" in pending.error.message
        host = rt._host
    async with asyncio.timeout(10):  # a waiter nobody would answer: refused, not left hanging
        with pytest.raises(StorageUnavailable, match="thawer is stopped"):
            await host.thawer.thaw("counter", "late")
    if backend.name != "memory":
        async with _rt(backend) as again:
            assert await again.get(Counter, "c").get() == 1  # the refused commit wrote nothing


async def test_a_client_relayed_to_a_stopping_node_is_told_to_reconnect(
    backend: Backend,
) -> None:
    # The web integration closes such a client 1012 (reconnect): the attach raised Moved.
    async with _in_its_stop(backend) as rt:
        client = Recorder()
        async with asyncio.timeout(10):
            with pytest.raises(Moved, match="is leaving"):
                await rt._host.attach(Counter, "room", client, relayed=True)
        assert client.frames == [] and ("counter", "room") not in rt._host.activations


async def test_a_websocket_relayed_to_a_leaving_owner_is_closed_1012(
    sql_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: a client attaches through the edge, whose placement names the owner, while
    the owner is stopping; the owner refuses the relayed attach and the client is told to
    reconnect (1012), with nothing activated on either node."""
    global RELEASE
    RELEASE = asyncio.Event()
    monkeypatch.setattr(Counter, "placement", "hash")
    key = next(f"room{i}" for i in range(100)
               if rendezvous(f"counter:room{i}", ["owner", "edge"]) == "owner")

    def objects(node_id: str) -> Objects:
        return Objects(objects=[Counter, Holder], database_url=sql_backend.url,
                       schema=sql_backend.schema, create_tables=True, node_id=node_id)

    owner, edge = objects("owner"), objects("edge")
    app = FastAPI(lifespan=edge.lifespan)
    app.include_router(edge.router)
    await owner.start()
    stopping = None
    try:
        await owner.runtime.get(Holder, "h").touch()
        async with LiveServer(app) as server:
            await wait_until(lambda: "owner" in edge.runtime._host.routing.node.live,
                             what="the edge sees the owner")
            stopping = asyncio.create_task(owner.runtime.close())
            await wait_until(lambda: owner.runtime._host.stopping, what="the stop to begin")
            async with connect(server.ws_url(f"/objects/counter/{key}/ws"),
                               open_timeout=10) as ws:
                with pytest.raises(ConnectionClosed):
                    while True:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        assert frame.get("event") != "objects:attached", frame
            assert ws.close_code == 1012 and "leaving" in (ws.close_reason or ""), (
                ws.close_code, ws.close_reason)
            assert owner.runtime.stats().relayed == 1
            assert owner.runtime.stats().active == 1 and edge.runtime.stats().active == 0
    finally:
        RELEASE.set()
        await (stopping if stopping is not None else owner.runtime.close())
