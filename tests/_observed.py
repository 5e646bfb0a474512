"""Nodes for the metrics and traces tests: real uvicorn servers, each an app with its node.

Each node is a FastAPI app (the websocket router, ``GET /metrics`` and one route that calls any
method) served by ``LiveServer`` on its own thread and loop, with its own internal listener:
forwarded calls and relayed websockets between them are the real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_objects import Alarm, DurableObject, Objects, client_callable, readonly
from fastapi_objects.storage import open_storage
from tests._server import LiveServer
from tests.conftest import Backend


class TallyState(BaseModel):
    value: int = 0
    alarms: int = 0


class Tally(DurableObject[TallyState]):
    public = True

    @client_callable
    async def add(self, by: int = 1) -> int:
        self.state.value += by
        return self.state.value

    @readonly
    async def where(self) -> str:
        return self.objects.node_id

    async def boom(self) -> None:
        raise RuntimeError("secret detail")

    async def arm(self) -> None:
        self.set_alarm("ring", delay=0)

    async def on_alarm(self, alarm: Alarm) -> None:
        self.state.alarms += 1

    @readonly
    async def rung(self) -> int:
        return self.state.alarms


class Nap(Tally):
    """A tally that hibernates as soon as it is idle."""

    idle_timeout = 0.1


class Stuck(Tally):
    """A tally whose ``stall`` overruns its call timeout."""

    call_timeout = 0.2

    async def stall(self) -> None:
        await asyncio.Event().wait()


TYPES = [Tally, Nap, Stuck]


def node_app(backend: Backend, name: str, **options: Any) -> tuple[FastAPI, Objects]:
    """Node ``name``'s app: websockets, ``GET /metrics`` and ``POST /call/{type}/{key}/{m}``."""
    objects = Objects(
        objects=TYPES, database_url=backend.url, schema=backend.schema, node_id=name, **options
    )
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)
    app.include_router(objects.metrics_router(public=True))

    @app.post("/call/{type_name}/{key}/{method}")
    async def call(type_name: str, key: str, method: str, args: dict[str, Any]) -> Any:
        return {"result": await objects.call(objects.runtime.object_type(type_name), key,
                                             method, args)}

    return app, objects


@asynccontextmanager
async def two_nodes(
    backend: Backend, apps: dict[str, FastAPI]
) -> AsyncIterator[dict[str, LiveServer]]:
    """Serve ``apps`` (node name -> app) on one database, its tables created first."""
    storage = open_storage(backend.url, schema=backend.schema)
    await storage.create_tables()  # once: the nodes would race to create them
    await storage.close()
    servers = {name: LiveServer(app) for name, app in apps.items()}
    try:
        for server in servers.values():
            await server.start()
        yield servers
    finally:
        for server in servers.values():
            await server.stop()
