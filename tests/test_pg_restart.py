"""PostgreSQL restarted for real under load: nothing acknowledged is lost, service resumes."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections import Counter as Tally
from pathlib import Path

import pytest
from pydantic import BaseModel

from fastapi_objects import DurableObject, ObjectsError, Runtime
from fastapi_objects.storage import open_storage


class TallyState(BaseModel):
    value: int = 0


class Tallied(DurableObject[TallyState]):
    async def increment(self) -> int:
        self.state.value += 1
        return self.state.value


def _restart_command() -> list[str] | None:
    versions = sorted(Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").is_dir() else []
    if not versions or shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        return None
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main", "restart"]


@pytest.mark.postgres
async def test_acknowledged_writes_survive_a_postgres_restart(pg_url: str, pg_schema: str) -> None:
    command = _restart_command()
    if command is None:
        if os.environ.get("OBJECTS_REQUIRE_POSTGRES") == "1":
            pytest.fail("cannot restart the local PostgreSQL (needs root and pg_ctlcluster)")
        pytest.skip("cannot restart the local PostgreSQL here (needs root and pg_ctlcluster)")
    acked: Tally[str] = Tally()
    unknown: Tally[str] = Tally()  # failed calls whose commit may still have happened
    failures: list[str] = []
    stop = asyncio.Event()
    keys = [f"k{i}" for i in range(20)]

    async def worker(rt: Runtime, n: int) -> None:
        i = n
        while not stop.is_set():
            key = keys[i % len(keys)]
            i += 7
            try:
                await rt.get(Tallied, key).increment()
            except ObjectsError as exc:
                unknown[key] += 1
                failures.append(type(exc).__name__)
                await asyncio.sleep(0.05)
            else:
                acked[key] += 1

    async def until(total: int) -> None:
        async with asyncio.timeout(60):
            while sum(acked.values()) < total:  # noqa: ASYNC110 - counts, not one event
                await asyncio.sleep(0.01)

    async with Runtime(
        objects=[Tallied], database_url=pg_url, schema=pg_schema, create_tables=True
    ) as rt:
        workers = [asyncio.create_task(worker(rt, n)) for n in range(16)]
        await until(300)
        before = sum(acked.values())
        restart = await asyncio.to_thread(subprocess.run, command, capture_output=True, timeout=60)
        assert restart.returncode == 0, restart.stderr
        await until(before + 300)  # service resumed on fresh connections
        stop.set()
        await asyncio.gather(*workers)

    storage = open_storage(pg_url, schema=pg_schema)
    try:
        for key in keys:
            cp = await storage.load("tallied", key)
            stored = cp.state["value"] if cp is not None else 0
            assert acked[key] <= stored <= acked[key] + unknown[key], (key, acked, unknown)
    finally:
        await storage.close()
    # The restart was seen (calls failed while the server was away), and failed clearly.
    assert failures
    assert set(failures) <= {"StorageUnavailable", "ConflictError", "CallTimeout"}, failures
