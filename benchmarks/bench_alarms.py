"""Alarm lag and queue throughput, on PostgreSQL.

Alarms: 10,000 alarms due within one second over 1,000 objects.

Each object sets 10 alarms spread over one second; the figure is how long after its due time
each alarm's ``on_alarm`` ran (lag p50/p99) and how long until all had fired. Two cases: the
objects stay active (the owner's timers fire them) and the objects hibernated first (the
node's poller finds and delivers them). The baseline in the same run is the loop's own timer
lag for 10,000 ``call_at`` callbacks spread the same way.

Jobs: N no-op jobs through ``objects.queue`` with workers on one node and on two (in one
process), against a bare ``SELECT … FOR UPDATE SKIP LOCKED`` job-table loop (claim, then
delete) through asyncpg with as many loops, in the same run.

    .venv/bin/python benchmarks/bench_alarms.py [--objects 1000] [--per-object 10] [--jobs 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
from pydantic import BaseModel

from fastapi_objects import DurableObject, Runtime
from fastapi_objects.storage import Alarm

PG = os.environ.get("OBJECTS_TEST_DATABASE_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test")
LAGS: list[float] = []


class BellState(BaseModel):
    rung: int = 0


class Bell(DurableObject[BellState]):
    idle_timeout = 3600.0

    async def arm(self, start: float, per_object: int) -> None:
        base = datetime.fromtimestamp(start, UTC)
        for i in range(per_object):
            self.set_alarm(f"a{i}", at=base + timedelta(seconds=(i + hash(self.key) % 97 / 97)
                                                        / per_object))

    async def on_alarm(self, alarm: Alarm) -> None:
        LAGS.append((datetime.now(UTC) - alarm.scheduled_at).total_seconds())
        self.state.rung += 1


class SleepyBell(Bell):
    type_name = "sleepy_bell"
    idle_timeout = 0.5


def _stats(lags: list[float], total: int, started: float) -> str:
    lags = sorted(lags)
    p99 = lags[int(0.99 * (len(lags) - 1))]
    return (f"{len(lags)}/{total} fired; all within {time.monotonic() - started:.2f}s; "
            f"lag p50 {1000 * statistics.median(lags):.0f} ms, p99 {1000 * p99:.0f} ms")


async def timer_baseline(total: int) -> str:
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    start = loop.time() + 2.0
    done = asyncio.Event()
    for i in range(total):
        due = start + (i % 1000) / 1000

        def fire(due: float = due) -> None:
            lags.append(loop.time() - due)
            if len(lags) == total:
                done.set()

        loop.call_at(due, fire)
    began = time.monotonic()
    await done.wait()
    return _stats(lags, total, began)


async def run(cls: type[Bell], objects: int, per_object: int, schema: str) -> str:
    LAGS.clear()
    total = objects * per_object
    async with Runtime(objects=[cls], database_url=PG, schema=schema, create_tables=True) as rt:
        start = time.time() + 4.0 + objects / 500  # time to set them all first
        await asyncio.gather(*(rt.get(cls, f"o{i}").arm(start, per_object)
                               for i in range(objects)))
        began = time.monotonic()
        async with asyncio.timeout(120):
            while len(LAGS) < total:  # noqa: ASYNC110 - the handlers run in other tasks
                await asyncio.sleep(0.05)
        return _stats(LAGS, total, began)


async def bare_jobs(schema: str, jobs: int, loops: int) -> float:
    """Jobs/s of a bare SKIP LOCKED job table: claim with a lease, then delete."""
    pool = await asyncpg.create_pool(PG.replace("postgresql+asyncpg", "postgresql"),
                                     min_size=loops, max_size=loops)
    table = f'"{schema}".bare_jobs'
    async with pool.acquire() as conn:
        await conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, payload jsonb, "
                           "claimed_until timestamptz)")
        await conn.execute(f"INSERT INTO {table} (payload) SELECT to_jsonb(g) "
                           f"FROM generate_series(1, {jobs}) g")
    claim = (f"UPDATE {table} SET claimed_until = now() + interval '30 seconds' WHERE id = "
             f"(SELECT id FROM {table} WHERE claimed_until IS NULL ORDER BY id "
             "FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id")

    async def loop() -> None:
        async with pool.acquire() as conn:
            while (job := await conn.fetchval(claim)) is not None:
                await conn.execute(f"DELETE FROM {table} WHERE id = $1", job)

    began = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(loops)))
    elapsed = time.perf_counter() - began
    await pool.close()
    return jobs / elapsed


async def queue_jobs(schema: str, jobs: int, nodes: int, loops: int) -> float:
    """Jobs/s through objects.queue with no-op workers spread over ``nodes`` runtimes."""
    done = 0
    finished = asyncio.Event()
    runtimes = []
    for i in range(nodes):
        rt = Runtime(database_url=PG, schema=schema, node_id=f"n{i}-{uuid.uuid4().hex[:4]}",
                     create_tables=True)

        @rt.worker("bench", concurrency=loops // nodes, lease=30.0)
        async def work(job: object) -> None:
            nonlocal done
            done += 1
            if done == jobs:
                finished.set()

        runtimes.append(rt)
    name = f"bench{nodes}"
    async with runtimes[0]:
        q = runtimes[0].queue(name)
        # Enqueue first (not timed), with no worker running on that queue name yet.
        for i in range(jobs):
            await q.enqueue(i)
        for rt in runtimes:
            rt._workers.registered = [
                type(w)(name, w.fn, w.concurrency, w.lease) for w in rt._workers.registered
            ]
        began = time.perf_counter()
        runtimes[0]._workers.start()
        others = runtimes[1:]
        for rt in others:
            await rt.start()
        try:
            async with asyncio.timeout(300):
                await finished.wait()
            elapsed = time.perf_counter() - began
        finally:
            for rt in others:
                await rt.close()
    return jobs / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--per-object", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG.replace("postgresql+asyncpg", "postgresql"))
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        total = args.objects * args.per_object
        print(f"baseline, the loop's timers ({total}): {await timer_baseline(total)}")
        print(f"active objects (owner timers):    "
              f"{await run(Bell, args.objects, args.per_object, schema)}")
        print(f"hibernated objects (the poller):  "
              f"{await run(SleepyBell, args.objects, args.per_object, schema)}")
        print("target: lag p99 <= 1 s")
        bare = await bare_jobs(schema, args.jobs, 8)
        one = await queue_jobs(schema, args.jobs, 1, 8)
        two = await queue_jobs(schema, args.jobs, 2, 8)
        print(f"jobs/s, {args.jobs} no-op jobs, 8 loops: bare SKIP LOCKED table {bare:.0f}; "
              f"objects.queue on 1 node {one:.0f} ({one / bare:.2f}x), "
              f"on 2 nodes {two:.0f} ({two / bare:.2f}x)")
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
