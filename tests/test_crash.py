"""A process killed with SIGKILL mid-flight loses no acknowledged result (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _crash_worker import Tally

from fastapi_objects.runtime import Runtime
from fastapi_objects.storage import open_storage

if TYPE_CHECKING:
    from conftest import Backend

WORKER = Path(__file__).with_name("_crash_worker.py")
KEYS = 50
CALLERS = 64
ACKS_BEFORE_KILL = 400


async def _run_and_kill(backend: Backend) -> dict[str, int]:
    """Start the worker, read acknowledgements, SIGKILL it; return the highest ack per key."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), backend.url, backend.schema or "-", str(KEYS), str(CALLERS),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    acked: dict[str, int] = {}
    seen = 0

    def take(line: bytes) -> None:
        nonlocal seen
        key, value = line.decode().split()
        acked[key] = max(acked.get(key, 0), int(value))
        seen += 1

    try:
        first = await asyncio.wait_for(proc.stdout.readline(), 60)
        if first != b"ready\n":
            pytest.fail(f"worker did not start: {first!r} {await proc.stderr.read()!r}")
        while seen < ACKS_BEFORE_KILL:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if not line.endswith(b"\n"):
                pytest.fail(f"worker stopped early: {await proc.stderr.read()!r}")
            take(line)
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
    # Lines already written before the kill were acknowledged too; a cut last line was not.
    rest = await proc.stdout.read()
    for line in rest.splitlines(keepends=True):
        if line.endswith(b"\n"):
            take(line)
    assert await proc.wait() == -signal.SIGKILL
    assert seen >= ACKS_BEFORE_KILL
    return acked


async def test_sigkill_loses_no_acknowledged_result(sql_backend: Backend) -> None:
    acked = await _run_and_kill(sql_backend)
    assert len(acked) > KEYS // 2
    storage = open_storage(sql_backend.url, schema=sql_backend.schema)
    try:
        for key, value in sorted(acked.items()):
            cp = await storage.load("tally", key)
            assert cp is not None, f"{key}: acknowledged {value} but never stored"
            stored = cp.state["value"]
            assert stored >= value, f"{key}: acknowledged {value} but only {stored} is stored"
            # The journal agrees with the state: one entry per increment, none lost or doubled.
            journal = await storage.read_journal("tally", key)
            assert [e.payload for e in journal] == list(range(1, stored + 1))
            assert [e.rev for e in journal] == list(range(1, stored + 1))
            assert cp.journal_rev == stored
    finally:
        await storage.close()
    # A restarted runtime carries on from the stored state.
    async with Runtime(
        objects=[Tally], database_url=sql_backend.url, schema=sql_backend.schema
    ) as runtime:
        for key in sorted(acked)[:5]:
            before = await runtime.storage.load("tally", key)
            assert before is not None
            assert await runtime.get(Tally, key).increment() == before.state["value"] + 1


class _Lock:
    """Hold the database's write lock on the checkpoint rows from outside the runtime."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._release: Any = None

    async def __aenter__(self) -> _Lock:
        if self.backend.name == "sqlite":
            import sqlite3

            path = self.backend.url.split("///", 1)[1]
            db = sqlite3.connect(path, isolation_level=None)
            db.execute("BEGIN IMMEDIATE")  # the one SQLite writer is now this connection

            async def release_sqlite() -> None:
                db.execute("ROLLBACK")
                db.close()

            self._release = release_sqlite
        else:
            import asyncpg  # type: ignore[import-untyped]

            conn = await asyncpg.connect(self.backend.url.replace("+asyncpg", ""))
            tx = conn.transaction()
            await tx.start()
            table = f'"{self.backend.schema}".objects_checkpoints'
            await conn.execute(f"SELECT 1 FROM {table} FOR UPDATE")

            async def release_pg() -> None:
                await tx.rollback()
                await conn.close()

            self._release = release_pg
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._release()


class Steady(Tally):
    """A tally that stays in memory for the whole test (no hibernation in between)."""

    idle_timeout = 30.0


async def test_output_gate_holds_results_until_the_commit_is_durable(sql_backend: Backend) -> None:
    """While the database cannot commit, no result that depends on the new state leaves."""
    async with Runtime(
        objects=[Steady], database_url=sql_backend.url, schema=sql_backend.schema,
        create_tables=True,
    ) as runtime:
        tally = runtime.get(Steady, "k")
        assert await tally.increment() == 1
        async with _Lock(sql_backend):
            write = asyncio.create_task(tally.increment())
            await asyncio.sleep(0.2)
            assert not write.done(), "a result left before its commit"
            # A read of the uncommitted state, and a later turn, wait for the same commit.
            read = asyncio.create_task(tally.read())
            later = asyncio.create_task(tally.increment())
            await asyncio.sleep(0.1)
            assert not read.done() and not later.done()
        assert await write == 2
        assert await read == 2
        assert await later == 3
        cp = await runtime.storage.load("steady", "k")
        assert cp is not None and cp.state["value"] == 3
        assert runtime.stats().thaws == 1
