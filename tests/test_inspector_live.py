"""The inspector over real uvicorn servers: the live view (Server-Sent Events) and a cluster.

One node, and two nodes sharing a database, where the inspector of one shows the other's
attached clients, follows the object's broadcasts and sends edits and restores to the owner;
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from websockets.asyncio.client import connect

from fastapi_objects import Objects
from tests._inspector_app import ADMIN, Counter, make_app, populate
from tests._server import LiveServer
from tests.conftest import Backend

API = "/objects/inspector/api"
WAIT = 10.0


class Live:
    """An open live view: the frames it received, read a line at a time."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines

    async def ready(self) -> None:
        assert await self._event() == ("ready", {})

    async def frame(self) -> dict[str, Any]:
        name, data = await self._event()
        assert name == "message", (name, data)
        assert isinstance(data, dict)
        return data

    async def _event(self) -> tuple[str, Any]:
        name, data = "message", None
        async with asyncio.timeout(WAIT):
            async for line in self._lines:
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                elif line == "" and data is not None:
                    return name, data
        raise AssertionError("the live view ended")


@asynccontextmanager
async def watching(http: httpx2.AsyncClient, url: str) -> AsyncIterator[Live]:
    async with http.stream("GET", url, auth=ADMIN, timeout=WAIT) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        live = Live(response.aiter_lines())
        await live.ready()
        yield live


async def test_the_live_view_follows_broadcasts_without_waking_the_object(
    sql_backend: Backend,
) -> None:
    app, objects = make_app(
        sql_backend.url, schema=sql_backend.schema, create_tables=True
    )
    async with LiveServer(app) as server, httpx2.AsyncClient(base_url=server.url) as http:
        url = f"{API}/objects/counter/quiet/live"
        async with watching(http, url):  # an object nobody holds: watching does not wake it
            assert await server.run(_active(objects)) == []
        await server.run(populate(objects))
        async with watching(http, f"{API}/objects/counter/alpha/live") as live:
            await server.run(objects.get(Counter, "alpha").increment(5))
            assert await live.frame() == {
                "topic": "counter:alpha", "event": "changed", "payload": {"value": 8}
            }
            edit = await http.patch(
                f"{API}/objects/counter/alpha/state", auth=ADMIN,
                json=[{"op": "replace", "path": "/value", "value": 1}],
                headers={"if-match": '"4"'},
            )
            assert edit.status_code == 200, edit.text
            assert await live.frame() == {
                "topic": "counter:alpha", "event": "objects:edit", "payload": {"rev": 5}
            }
            restore = await http.post(f"{API}/objects/counter/alpha/restore", auth=ADMIN,
                                      json={"rev": 4})
            assert restore.status_code == 200, restore.text
            assert (await live.frame())["payload"] == {"rev": 6, "restored": 4}
        unauthorized = await http.get(f"{API}/objects/counter/alpha/live")
        assert unauthorized.status_code == 401


async def _active(objects: Objects) -> list[tuple[str, str]]:
    return sorted(objects.runtime._host.activations)


async def test_on_a_cluster_the_owner_answers_for_its_clients_and_runs_the_edits(
    sql_backend: Backend,
) -> None:
    """On PostgreSQL broadcasts reach every node; on SQLite (a pub/sub of each process's own)
    the live view of node-b listens on node-a, the owner."""
    url, schema = sql_backend.url, sql_backend.schema
    app_a, a = make_app(url, schema=schema, create_tables=True, node_id="node-a")
    app_b, b = make_app(url, schema=schema, create_tables=True, node_id="node-b")
    async with (
        LiveServer(app_a) as server_a, LiveServer(app_b) as server_b,
        httpx2.AsyncClient(base_url=server_b.url, auth=ADMIN) as http,
    ):
        await server_a.run(a.get(Counter, "shared").increment())  # node-a owns it
        async with connect(server_a.ws_url("/objects/counter/shared/ws")) as client:
            attached = json.loads(await client.recv())
            assert attached["event"] == "objects:attached"
            found = (await http.get(f"{API}/objects/counter/shared")).json()
            assert found["owner"] == "node-a"
            assert found["connections"] == [
                {"id": attached["payload"]["connection"], "tags": [], "state": {}}
            ]
            async with watching(http, f"{API}/objects/counter/shared/live") as live:
                edit = await http.patch(
                    f"{API}/objects/counter/shared/state", headers={"if-match": '"1"'},
                    json=[{"op": "replace", "path": "/label", "value": "from b"}],
                )
                assert edit.status_code == 200, edit.text
                # Through node-b's live view and to node-a's attached client: after the commit.
                assert (await live.frame())["event"] == "objects:edit"
                heard = json.loads(await client.recv())
                assert (heard["event"], heard["payload"]) == ("objects:edit", {"rev": 2})
                restore = await http.post(f"{API}/objects/counter/shared/restore",
                                          json={"rev": 1})
                assert restore.json()["restored"] == 1
                assert (await live.frame())["event"] == "objects:restore"
        assert await server_b.run(_active(b)) == []  # node-b never held it
        assert await server_a.run(a.get(Counter, "shared").get()) == 1
        entries = await server_a.run(a.journal(Counter, "shared"))
        assert [(e.kind, e.payload["by"]) for e in entries] == [
            ("objects:edit", "ann"), ("objects:restore", "ann")
        ]
        nodes = (await http.get(f"{API}/nodes")).json()
        assert {n["node_id"]: n["state"] for n in nodes["nodes"]} == {
            "node-a": "alive", "node-b": "alive"
        }
        assert next(n for n in nodes["nodes"] if n["node_id"] == "node-a")["owned"] == 1
