"""Frames through a relay: what the edge node sends to a relayed client, and to one that stops
reading. The edge runs under uvicorn on a loopback port; the owner is a second node of the same
database in this process (its internal listener on a port of its own); the clients are real
websocket clients, one of them a raw socket that never reads."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect

from fastapi_objects import Objects
from fastapi_objects.runtime.placement import rendezvous
from tests._apps import Counter
from tests._server import LiveServer
from tests._support import wait_until
from tests.conftest import Backend
from tests.test_websocket_live import (
    _events,
    _raw_client_that_never_reads,
    _read_until_too_slow,
    _wait_attached,
)


async def test_a_relayed_client_that_stops_reading_is_closed_4408_and_others_get_every_frame(
    sql_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Counter, "placement", "hash")
    key = next(f"s{i}" for i in range(100)
               if rendezvous(f"counter:s{i}", ["owner", "edge"]) == "owner")

    def objects(node_id: str) -> Objects:
        return Objects(objects=[Counter], database_url=sql_backend.url, max_outbox=64,
                       schema=sql_backend.schema, create_tables=True, node_id=node_id)

    owner, edge = objects("owner"), objects("edge")
    app = FastAPI(lifespan=edge.lifespan)
    app.include_router(edge.router)
    await owner.start()
    try:
        async with LiveServer(app) as server:
            await wait_until(lambda: "owner" in edge.runtime._host.routing.node.live,
                             what="the edge sees the owner")
            path = f"/objects/counter/{key}/ws"
            good = await connect(server.ws_url(path), open_timeout=10)
            await _wait_attached(good)
            stuck = await asyncio.to_thread(_raw_client_that_never_reads, server.port, path)
            try:
                assert owner.runtime.stats().relayed == 2  # both attached through the edge
                blob = "x" * 65536
                count = 300  # ~20 MB: more than the socket buffers can hide
                payloads = []
                for start in range(0, count, 10):  # the good client keeps up: 10 at a time
                    for i in range(start, start + 10):
                        await owner.publish(f"counter:{key}", "big", {"i": i, "blob": blob})
                    payloads += await _events(good, "big", 10)
                assert [p["i"] for p in payloads] == list(range(count))

                data = await asyncio.to_thread(_read_until_too_slow, stuck)
            finally:
                stuck.close()
                await good.close()
    finally:
        await owner.close()
    # A close frame with code 4408 (0x1138) and its reason, after fewer than all frames.
    assert b"\x11\x38client too slow" in data
    assert data.count(b'"event":"big"') < count
