"""State sync for real: uvicorn on a loopback port and ``websockets`` clients, on each backend.

One client drives 1,000 random calls; another follows the state, drops its connection
mid-run and resumes from the rev it holds. Both views end equal to the server's state.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect

from fastapi_objects import Objects
from tests._server import LiveServer
from tests._sync import Board, Mirror, random_step, same_json
from tests.conftest import Backend

CALLS = 1_000
WAIT = 15.0


@pytest.fixture
async def server(backend: Backend) -> AsyncIterator[LiveServer]:
    objects = Objects(objects=[Board], database_url=backend.url, schema=backend.schema,
                      create_tables=True)
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)
    async with LiveServer(app) as live:
        yield live


async def _frame(ws: ClientConnection) -> dict[str, Any]:
    frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert isinstance(frame, dict)
    return frame


async def _attach(server: LiveServer, mirror: Mirror, query: str = "") -> ClientConnection:
    ws = await connect(server.ws_url("/objects/board/live/ws" + (f"?{query}" if query else "")))
    assert (await _frame(ws))["event"] == "objects:attached"
    assert mirror.feed(await _frame(ws))  # the state (or the resume's patch) right after it
    return ws


async def _call(ws: ClientConnection, mirror: Mirror, ref: int, **args: Any) -> Any:
    await ws.send(json.dumps({"ref": ref, "call": "step" if args else "view", "args": args}))
    while True:
        frame = await _frame(ws)
        if not mirror.feed(frame) and frame.get("ref") == ref:
            return frame


async def _catch_up(ws: ClientConnection, mirror: Mirror, rev: int) -> None:
    while mirror.rev != rev:
        mirror.feed(await _frame(ws))


async def test_a_websocket_client_follows_1000_calls_across_a_reconnect(
    server: LiveServer,
) -> None:
    rnd = random.Random(1717)
    driver, follower = Mirror(), Mirror()
    drive = await _attach(server, driver)
    follow = await _attach(server, follower)
    for ref in range(CALLS):
        if ref == CALLS // 2:  # the follower drops (read up to here), calls go on meanwhile
            assert driver.rev is not None
            await _catch_up(follow, follower, driver.rev)
            await follow.close()
        if ref == CALLS // 2 + 5:
            follow = await _attach(server, follower, follower.resume_query())
        await _call(drive, driver, ref, **random_step(rnd))
    view = (await _call(drive, driver, -1))["result"]
    assert driver.rev is not None
    await _catch_up(follow, follower, driver.rev)
    assert same_json(driver.view, view) and same_json(follower.view, view)
    assert follower.states == 1 and driver.states == 1  # the resume was one patch
    await drive.close()
    await follow.close()
