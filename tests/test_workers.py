"""`uvicorn --workers 2` is two nodes: the fence keeps the data right and says what happened.

Two real worker processes serve the example app on one PostgreSQL schema and both activate the
same counter. Every answered increment must be in the database exactly once; the requests that
hit a stale instance get HTTP 409 with a message that names the cause (docs/running.md).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from fastapi_objects.storage import open_storage

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _ready(url: str) -> None:
    async with httpx2.AsyncClient() as client, asyncio.timeout(30):
        while True:
            try:
                if (await client.get(url + "/healthz")).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            await asyncio.sleep(0.1)


@pytest.mark.postgres
async def test_two_workers_lose_nothing_and_say_why(pg_url: str, pg_schema: str) -> None:
    storage = open_storage(pg_url, schema=pg_schema)
    await storage.create_tables()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, OBJECTS_DATABASE_URL=pg_url, OBJECTS_SCHEMA=pg_schema)
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uvicorn", "example_app.main:app", "--workers", "2",
        "--port", str(port), "--log-level", "warning",
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    statuses: list[int] = []
    messages: list[str] = []
    try:
        await _ready(url)
        # No keep-alive: every request is a new connection, which either worker may accept.
        limits = httpx2.Limits(max_keepalive_connections=0)

        async def caller() -> None:
            async with httpx2.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
                for _ in range(60):
                    response = await client.post("/counters/shared/increment")
                    statuses.append(response.status_code)
                    if response.status_code != 200:
                        messages.append(response.json()["error"]["message"])

        await asyncio.gather(*(caller() for _ in range(6)))
    finally:
        server.terminate()
        _, err = await asyncio.wait_for(server.communicate(), 30)
        stderr = err.decode(errors="replace")
    checkpoint = await storage.load("counter", "shared")
    await storage.close()

    assert set(statuses) <= {200, 409}, (set(statuses), stderr[-2000:])
    answered = statuses.count(200)
    assert checkpoint is not None
    assert checkpoint.state["value"] == answered  # nothing lost, nothing applied twice
    assert statuses.count(409) > 0, "both workers should have served the counter"
    assert all("fenced out" in m and "docs/running.md" in m for m in messages), messages[:3]
