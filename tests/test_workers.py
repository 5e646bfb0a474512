"""`uvicorn --workers 3` is three nodes and one owner per object: every call succeeds.

Real worker processes serve the example app behind one port, on PostgreSQL and on one SQLite
file. Each request is a new connection (no keep-alive), so the kernel spreads them over the
workers; the workers that do not own the counter forward its calls to the one that does.
1,000 increments at 32 concurrency must all answer 200 with distinct values, and the stored
value must be 1,000: nothing lost, nothing applied twice, no conflict.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from fastapi_objects import StorageUnavailable
from fastapi_objects.storage import Storage, open_storage

ROOT = Path(__file__).resolve().parent.parent
CALLS = 1000
CONCURRENCY = 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _ready(url: str, storage: Storage, server: asyncio.subprocess.Process) -> None:
    """Wait until the app answers and all three workers are registered nodes.

    The first worker up answers /healthz; the others may still be importing (seconds, on a
    loaded 2-core machine), and a worker still starting takes no connections.
    """
    async with httpx2.AsyncClient() as client, asyncio.timeout(60):
        while server.returncode is None:
            try:
                if (await client.get(url + "/healthz")).status_code == 200:
                    nodes = await storage.nodes(10)
                    if len([n for n in nodes if n.alive]) == 3:
                        return
            except (httpx2.TransportError, StorageUnavailable):
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"uvicorn exited with {server.returncode} before it was ready")


async def _hammer(storage: Storage, env: dict[str, str]) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uvicorn", "example_app.main:app", "--workers", "3",
        "--port", str(port), "--log-level", "warning",
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    statuses: list[int] = []
    values: list[int] = []
    errors: list[str] = []
    try:
        await _ready(url, storage, server)
        limits = httpx2.Limits(max_keepalive_connections=0)
        queue: asyncio.Queue[None] = asyncio.Queue()
        for _ in range(CALLS):
            queue.put_nowait(None)

        async def caller() -> None:
            async with httpx2.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
                while not queue.empty():
                    queue.get_nowait()
                    response = await client.post("/counters/shared/increment")
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        values.append(response.json()["value"])
                    else:
                        errors.append(response.text)

        await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
        nodes = await storage.nodes(10)
    finally:
        if server.returncode is None:
            server.terminate()
        _, err = await asyncio.wait_for(server.communicate(), 60)
        if server.returncode not in (0, -signal.SIGTERM):
            print(err.decode(errors="replace")[-3000:])  # shown with the failure
        stderr = err.decode(errors="replace")
    checkpoint = await storage.load("counter", "shared")

    assert statuses.count(200) == CALLS, (errors[:3], stderr[-3000:])
    assert sorted(values) == list(range(1, CALLS + 1))  # distinct, none lost
    assert checkpoint is not None and checkpoint.state["value"] == CALLS
    assert len([n for n in nodes if n.alive]) == 3, (nodes, stderr[-3000:])  # three nodes
    assert sum(n.owned for n in nodes) == 1  # one owner for the one counter


@pytest.mark.postgres
async def test_three_workers_on_postgres(pg_url: str, pg_schema: str) -> None:
    storage = open_storage(pg_url, schema=pg_schema)
    await storage.create_tables()
    env = dict(os.environ, OBJECTS_DATABASE_URL=pg_url, OBJECTS_SCHEMA=pg_schema)
    try:
        await _hammer(storage, env)
    finally:
        await storage.close()


async def test_three_workers_on_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'objects.db'}"
    storage = open_storage(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJECTS_")}
    env["OBJECTS_DATABASE_URL"] = url  # the workers create the tables at start, all at once
    try:
        await _hammer(storage, env)
    finally:
        await storage.close()
