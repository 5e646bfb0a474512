"""Figures of the durable work queues (issue 13), on SQLite and PostgreSQL, in one run.

    python benchmarks/bench_queue.py [--database-url URL] [--duration 3] [--jobs 10000] [--quick]

Enqueue: 64 producers call ``objects.queue(name).enqueue(i)`` back to back (and one producer,
the shape of tests/test_queue.py's kill -9 test), against a bare job table with the same 64
producers, one committed ``INSERT`` per job. Jobs: N no-op jobs, enqueued first, worked off by
``@objects.worker`` loops (8 per node, on one node and on two), against a bare job table worked
by as many loops that each claim a job in one transaction and delete it in another
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite, which has no row
locks). Every part checks what it measured: every acknowledged enqueue is pending in the
queue, and every job ran once and has exactly one completion record in the queue's journal.
Each part has its own SQLite file or PostgreSQL schema, removed at the end.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from _common import (  # the script's folder is on sys.path
    Run,
    add_loop_option,
    asyncpg_dsn,
    closed_loop,
    drop_schema,
    fresh_schema_name,
    log,
    pg_execute,
    revision,
    run_on_loop,
    table,
)

from fastapi_objects.runtime import Runtime
from fastapi_objects.runtime.queues import Claimed

DEFAULT_URL = os.environ.get("OBJECTS_BENCH_DATABASE_URL",
                             "postgresql+asyncpg://root@127.0.0.1:5432/test")
PRODUCERS = 64
LOOPS = 8  # worker loops, for the queue and for the bare tables


def _check(ok: bool, message: str) -> None:
    if not ok:
        sys.exit(f"CHECK FAILED: {message}")


@dataclass(frozen=True)
class Where:
    """One database to measure on: a SQLAlchemy URL, a schema (PostgreSQL) and a label."""

    name: str
    url: str
    schema: str | None

    def runtime(self, node: str = "") -> Runtime:
        return Runtime(database_url=self.url, schema=self.schema, create_tables=True,
                       node_id=f"bench-{node or 'n'}-{uuid.uuid4().hex[:4]}")


# -- bare job tables ---------------------------------------------------------------------------


class BarePg:
    """A job table on PostgreSQL through asyncpg: INSERT to enqueue, SKIP LOCKED to claim."""

    def __init__(self, url: str, schema: str) -> None:
        self.dsn = asyncpg_dsn(url)
        self.table = f'"{schema}".bare_jobs'

    async def create(self) -> None:
        await pg_execute(
            self.dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
            f"CREATE TABLE {self.table} (id bigserial PRIMARY KEY, payload jsonb, "
            "claimed_until timestamptz)",
        )

    async def enqueue(self, duration: float, warmup: float) -> Run:
        pool = await asyncpg.create_pool(self.dsn, min_size=32, max_size=32)
        sql = f"INSERT INTO {self.table} (payload) VALUES ($1::jsonb)"

        async def call(i: int) -> None:
            await pool.execute(sql, str(i))

        try:
            return await closed_loop(PRODUCERS, duration, call, warmup=warmup)
        finally:
            await pool.close()

    async def work(self, jobs: int, loops: int) -> float:
        pool = await asyncpg.create_pool(self.dsn, min_size=loops, max_size=loops)
        await pool.execute(f"TRUNCATE {self.table}")
        await pool.execute(f"INSERT INTO {self.table} (payload) SELECT to_jsonb(g) "
                           f"FROM generate_series(1, {jobs}) g")
        claim = (f"UPDATE {self.table} SET claimed_until = now() + interval '30 seconds' "
                 f"WHERE id = (SELECT id FROM {self.table} WHERE claimed_until IS NULL "
                 "ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id")
        delete = f"DELETE FROM {self.table} WHERE id = $1"
        done = 0

        async def loop() -> None:
            nonlocal done
            async with pool.acquire() as conn:
                while (job := await conn.fetchval(claim)) is not None:
                    await conn.execute(delete, job)
                    done += 1

        try:
            began = time.perf_counter()
            await asyncio.gather(*(loop() for _ in range(loops)))
            elapsed = time.perf_counter() - began
            left = await pool.fetchval(f"SELECT count(*) FROM {self.table}")
        finally:
            await pool.close()
        _check(done == jobs and left == 0, f"bare table: {done} of {jobs} done, {left} left")
        return jobs / elapsed


class BareSqlite:
    """A job table in a SQLite file through sqlite3 (WAL, synchronous=FULL, as the runtime).

    Every statement is its own transaction on one connection used from one thread: SQLite has
    one writer at a time, and a connection per loop only adds its busy handler's sleeps.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE bare_jobs (id INTEGER PRIMARY KEY, payload TEXT, "
                          "claimed_until REAL)")
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bare")

    def close(self) -> None:
        self.executor.shutdown()
        self.conn.close()

    async def _run(self, fn: Callable[[], object]) -> object:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def enqueue(self, duration: float, warmup: float) -> Run:
        conn = self.conn

        async def call(i: int) -> None:
            await self._run(lambda: conn.execute(
                "INSERT INTO bare_jobs (payload) VALUES (?)", (str(i),)))

        return await closed_loop(PRODUCERS, duration, call, warmup=warmup)

    async def work(self, jobs: int, loops: int) -> float:
        conn = self.conn
        conn.execute("DELETE FROM bare_jobs")
        conn.executemany("INSERT INTO bare_jobs (payload) VALUES (?)",
                         [(str(i),) for i in range(jobs)])

        def claim() -> int | None:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(
                "UPDATE bare_jobs SET claimed_until = julianday('now') + 30.0 / 86400 WHERE id = "
                "(SELECT id FROM bare_jobs WHERE claimed_until IS NULL ORDER BY id LIMIT 1) "
                "RETURNING id").fetchone()
            conn.execute("COMMIT")
            return None if row is None else int(row[0])

        done = 0

        async def loop() -> None:
            nonlocal done
            while (job := await self._run(claim)) is not None:
                await self._run(lambda job=job: conn.execute(
                    "DELETE FROM bare_jobs WHERE id = ?", (job,)))
                done += 1

        began = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(loops)))
        elapsed = time.perf_counter() - began
        left = conn.execute("SELECT count(*) FROM bare_jobs").fetchone()[0]
        _check(done == jobs and left == 0, f"bare sqlite: {done} of {jobs} done, {left} left")
        return jobs / elapsed


# -- objects.queue -----------------------------------------------------------------------------


async def _completions(rt: Runtime, name: str) -> Counter[str]:
    """Each job id's completion records in the queue's journal."""
    events = await rt.journal(rt.object_type("objects_queue"), name)
    return Counter(e.payload["id"] for e in events
                   if e.kind == "event" and e.payload["kind"] == "completed")


async def queue_enqueue(where: Where, name: str, producers: int, duration: float,
                        warmup: float) -> tuple[Run, str]:
    """``producers`` closed-loop producers of ``enqueue(i)`` on one queue."""
    acked: list[str] = []
    async with where.runtime() as rt:
        q = rt.queue(name)

        async def call(i: int) -> None:
            acked.append(await q.enqueue(i))

        run = await closed_loop(producers, duration, call, warmup=warmup)
        stats = await q.stats()
        counters = rt.stats()
    _check(stats["ready"] == len(acked) == len(set(acked)),
           f"{where.name}: {stats['ready']} jobs ready, {len(acked)} enqueues acknowledged")
    note = (f"{where.name}, {producers} producer(s): {run.cpu_us_per_call:,.0f} us of CPU per "
            f"enqueue, {counters.turns / max(counters.batches, 1):.1f} turns per "
            f"transaction, machine {run.machine_busy:.0%} busy, "
            f"{stats['ready']:,} jobs pending at the end")
    return run, note


async def _fill(where: Where, name: str, jobs: int) -> list[str]:
    async with where.runtime("fill") as rt:
        q = rt.queue(name)
        ids: list[str] = []
        it = iter(range(jobs))

        async def producer() -> None:
            for i in it:
                ids.append(await q.enqueue(i))

        await asyncio.gather(*(producer() for _ in range(PRODUCERS)))
    return ids


async def queue_work(where: Where, name: str, jobs: int, nodes: int) -> tuple[float, str]:
    """Jobs/s through ``@worker`` loops (``LOOPS`` per node) on N no-op jobs enqueued first.

    Timed from the first job a handler gets until every completion is durable; the runtimes
    start (and the queue thaws) before that.
    """
    ids = await _fill(where, name, jobs)
    ran: Counter[str] = Counter()
    first: list[float] = []
    runtimes = []
    for n in range(nodes):
        rt = where.runtime(f"w{n}")

        @rt.worker(name, concurrency=LOOPS, lease=30.0)
        async def work(job: Claimed) -> None:
            if not first:
                first.append(time.perf_counter())
            ran[job.id] += 1

        runtimes.append(rt)
    cpu0 = os.times()
    try:
        for rt in runtimes:
            await rt.start()
        q = runtimes[0].queue(name)
        async with asyncio.timeout(600):
            while (await q.stats())["completed"] < jobs:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - first[0]
        cpu1 = os.times()
        completions = await _completions(runtimes[0], name)
        stats = await q.stats()
    finally:
        for rt in runtimes:
            await rt.close()
    _check(stats == {"ready": 0, "claimed": 0, "dead": 0, "completed": jobs},
           f"{where.name}: stats {stats} after {jobs} jobs")
    _check(completions == dict.fromkeys(ids, 1),
           f"{where.name}: the journal does not hold one completion per job")
    _check(ran == dict.fromkeys(ids, 1), f"{where.name}: a job ran twice or never")
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / jobs * 1e6
    return jobs / elapsed, f"{where.name}, {nodes} node(s): {cpu:,.0f} us of CPU per job"


# -- main --------------------------------------------------------------------------------------


@dataclass
class Report:
    """Rows of the final table, and notes printed under it."""

    rows: list[list[str]]
    notes: list[str]

    def add(self, name: str, value: str, target: str, ok: bool | None) -> None:
        self.rows.append([name, value, target, "" if ok is None else ("PASS" if ok else "MISS")])


async def part_enqueue(where: Where, bare: BarePg | BareSqlite, args: argparse.Namespace,
                       rep: Report) -> None:
    log(f"{where.name}: bare job table, {PRODUCERS} producers")
    base = await bare.enqueue(args.duration, args.warmup)
    log(f"{where.name}: objects.queue, {PRODUCERS} producers")
    many, note = await queue_enqueue(where, "enq64", PRODUCERS, args.duration, args.warmup)
    rep.notes.append(note)
    log(f"{where.name}: objects.queue, 1 producer")
    one, note = await queue_enqueue(where, "enq1", 1, args.duration, args.warmup)
    rep.notes.append(note)
    rep.add(f"{where.name}: bare job table, INSERT per job, {PRODUCERS} producers",
            f"{base.rate:,.0f} jobs/s (p50 {base.pct_ms(50):.2f} ms)", "(reference)", None)
    rep.add(f"{where.name}: enqueue, {PRODUCERS} producers",
            f"{many.rate:,.0f} jobs/s = {many.rate / base.rate:.2f}x bare "
            f"(p50 {many.pct_ms(50):.2f} ms, p99 {many.pct_ms(99):.2f} ms)",
            ">= 2,000 jobs/s", many.rate >= 2000)
    rep.add(f"{where.name}: enqueue, 1 producer", f"{one.rate:,.0f} jobs/s "
            f"(p50 {one.pct_ms(50):.2f} ms)", "(context)", None)


async def part_jobs(where: Where, bare: BarePg | BareSqlite, args: argparse.Namespace,
                    rep: Report) -> None:
    what = "SKIP LOCKED" if isinstance(bare, BarePg) else "claim/delete"
    log(f"{where.name}: bare {what} table, {args.jobs} jobs, {LOOPS} loops")
    base = await bare.work(args.jobs, LOOPS)
    rep.add(f"{where.name}: bare {what} job table, {LOOPS} loops", f"{base:,.0f} jobs/s",
            "(reference)", None)
    for nodes in (1, 2):
        log(f"{where.name}: objects.queue workers, {nodes} node(s)")
        rate, note = await queue_work(where, f"work{nodes}", args.jobs, nodes)
        rep.notes.append(note)
        rep.add(f"{where.name}: no-op jobs, {LOOPS} worker slots per node, {nodes} node(s)",
                f"{rate:,.0f} jobs/s = {rate / base:.2f}x bare", ">= 0.5x bare",
                rate / base >= 0.5)


async def main(args: argparse.Namespace) -> None:
    load = os.getloadavg()[0]
    started = time.perf_counter()
    log(f"fastapi_objects {revision()}, SQLite {sqlite3.sqlite_version}, "
         f"load average {load:.2f}")
    rep = Report([], [])
    parts = [p for p in (part_enqueue, part_jobs) if p.__name__[5:] in args.only]
    folder = tempfile.mkdtemp(prefix="bench_queue_", dir=args.dir)
    try:
        if "sqlite" in args.backends:
            for part in parts:
                path = os.path.join(folder, f"{part.__name__}.db")
                bare = BareSqlite(os.path.join(folder, f"{part.__name__}-bare.db"))
                try:
                    await part(Where("SQLite", f"sqlite+aiosqlite:///{path}", None), bare,
                               args, rep)
                finally:
                    bare.close()
        if "postgres" in args.backends:
            for part in parts:
                schema = fresh_schema_name("queue")
                await pg_execute(args.database_url, f'CREATE SCHEMA "{schema}"')
                try:
                    pg = BarePg(args.database_url, schema)
                    await pg.create()
                    await part(Where("PostgreSQL", args.database_url, schema), pg, args, rep)
                finally:
                    await drop_schema(args.database_url, schema)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print()
    print(table(rep.rows, ["figure", "value", "target", ""]))
    print()
    for note in rep.notes:
        print(f"- {note}")
    print(f"\nload average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
          f"{time.perf_counter() - started:.0f} s")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", default=DEFAULT_URL,
                   help="PostgreSQL (default OBJECTS_BENCH_DATABASE_URL or the local test db)")
    p.add_argument("--duration", type=float, default=3.0,
                   help="seconds per enqueue figure (default 3)")
    p.add_argument("--jobs", type=int, default=None,
                   help="jobs per jobs/s figure (default 10,000; 3,000 with --quick)")
    p.add_argument("--quick", action="store_true", help="1.5 s per enqueue figure, 3,000 jobs")
    p.add_argument("--only", default="enqueue,jobs", help="parts: enqueue,jobs")
    p.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres")
    p.add_argument("--dir", default=None, help="where the SQLite files go (default: temp dir)")
    add_loop_option(p)
    ns = p.parse_args()
    if ns.quick:
        ns.duration = 1.5
    ns.jobs = ns.jobs or (3_000 if ns.quick else 10_000)
    ns.warmup = 0.5
    return ns


if __name__ == "__main__":
    run_on_loop(main, _parse())
