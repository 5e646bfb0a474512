"""PostgreSQL restarted for real under load: nothing acknowledged is lost, service resumes.

The server restarted is one of the test's own (tests/_postgres.py): ``initdb`` in a temp folder
with the machine's binaries, on a free port, removed afterwards. The machine's PostgreSQL (the
one behind ``OBJECTS_TEST_DATABASE_URL``) is never stopped.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable

import pytest
from pydantic import BaseModel

from fastapi_objects import DurableObject, ObjectsError, Runtime
from fastapi_objects.storage import open_storage
from tests._postgres import OwnPostgres


class TallyState(BaseModel):
    value: int = 0


class Tallied(DurableObject[TallyState]):
    async def increment(self) -> int:
        self.state.value += 1
        return self.state.value


@pytest.fixture
async def own_postgres() -> AsyncIterator[OwnPostgres]:
    """A PostgreSQL of this test's own, removed afterwards; the machine's is never touched."""
    server = OwnPostgres.find()
    if isinstance(server, str):
        if os.environ.get("OBJECTS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"cannot run a PostgreSQL of the test's own: {server}")
        pytest.skip(f"cannot run a PostgreSQL of the test's own: {server}")
    try:
        await server.create()
        yield server
    finally:
        await server.remove()


@pytest.mark.postgres
async def test_acknowledged_writes_survive_a_postgres_restart(own_postgres: OwnPostgres) -> None:
    url = own_postgres.url
    acked: Tally[str] = Tally()
    unknown: Tally[str] = Tally()  # failed calls whose commit may still have happened
    failures: list[str] = []
    during_outage: list[str] = []  # failures of calls that began after the server had stopped
    down = False
    stop = asyncio.Event()
    keys = [f"k{i}" for i in range(20)]

    async def worker(rt: Runtime, n: int) -> None:
        i = n
        while not stop.is_set():
            key = keys[i % len(keys)]
            i += 7
            began_down = down
            try:
                await rt.get(Tallied, key).increment()
            except ObjectsError as exc:
                unknown[key] += 1
                failures.append(type(exc).__name__)
                if began_down and down:
                    during_outage.append(type(exc).__name__)
                await asyncio.sleep(0.05)
            else:
                acked[key] += 1
                assert not (began_down and down), "a call was acknowledged with the server down"

    async def until(check: Callable[[], bool]) -> None:
        async with asyncio.timeout(120):  # a guard against a hang, not a measure
            while not check():  # noqa: ASYNC110 - counts, not one event
                await asyncio.sleep(0.01)

    async with Runtime(objects=[Tallied], database_url=url, create_tables=True) as rt:
        workers = [asyncio.create_task(worker(rt, n)) for n in range(16)]
        await until(lambda: sum(acked.values()) >= 300)
        # Restarted as an operator would, in two steps so the outage is seen whatever the
        # machine's speed: the callers keep calling while it is down.
        await own_postgres.stop()
        down = True
        await until(lambda: len(during_outage) >= 16)
        down = False
        await own_postgres.start()
        before = sum(acked.values())
        await until(lambda: sum(acked.values()) >= before + 300)  # resumed, fresh connections
        stop.set()
        await asyncio.gather(*workers)

    storage = open_storage(url)
    try:
        for key in keys:
            cp = await storage.load("tallied", key)
            stored = cp.state["value"] if cp is not None else 0
            assert acked[key] <= stored <= acked[key] + unknown[key], (key, acked, unknown)
    finally:
        await storage.close()
    # While the server was down every call failed, and failed clearly.
    assert set(during_outage) == {"StorageUnavailable"}, during_outage
    assert set(failures) <= {"StorageUnavailable", "ConflictError", "CallTimeout"}, failures
