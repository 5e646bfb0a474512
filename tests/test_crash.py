"""A process killed with SIGKILL mid-flight loses no acknowledged result (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from _crash_worker import Tally
from _support import _probe_postgres_first  # noqa: F401 - autouse fixture

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
