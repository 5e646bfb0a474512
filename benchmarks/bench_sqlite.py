"""Figures of the embedded SQLite default, all measured in one run on files of this disk.

    python benchmarks/bench_sqlite.py [--duration 4] [--quick] [--loop uvloop|asyncio]

Every part gets a fresh SQLite file in a temporary folder (WAL, ``synchronous=FULL``, as the
runtime sets it), removed at the end. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from typing import Any

import sqlalchemy as sa
from _common import (  # the script's folder is on sys.path
    Run,
    add_loop_option,
    closed_loop,
    fmt_ms,
    log,
    revision,
    run_on_loop,
    table,
)
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from fastapi_objects.runtime import DurableObject, Runtime

CALLERS = 64
OBJECTS = 1_000


class CounterState(BaseModel):
    value: int = 0


class Counter(DurableObject[CounterState]):
    type_name = "bench_counter"
    idle_timeout = 3600.0  # nothing hibernates while a part runs

    async def increment(self, by: int = 1) -> int:
        self.state.value += by
        return self.state.value



def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _check(ok: bool, message: str) -> None:
    if not ok:
        sys.exit(f"CHECK FAILED: {message}")


# -- the probe: a bare sqlite3 group-commit loop ---------------------------------------------


async def bench_probe(folder: str, duration: float, warmup: float) -> Run:
    """The most a Python process commits to SQLite here: group commit and nothing else.

    64 callers over 1,000 keys, each call a turn on a dict (``value += 1``) that waits until a
    batch carrying its key is durable. One writer forms each batch from whatever callers are
    waiting and runs it in one thread hop: ``BEGIN IMMEDIATE``, ONE ``executemany`` UPDATE of a
    checkpoint-shaped row (rev and a JSON state) per key, ``COMMIT`` (WAL, synchronous=FULL).
    One batch in flight at a time, as the runtime's committer does.
    """
    path = os.path.join(folder, "probe.db")
    conn = _connect(path)
    conn.execute("CREATE TABLE probe (key TEXT PRIMARY KEY, rev INTEGER NOT NULL, "
                 "state TEXT NOT NULL)")
    keys = [f"k{i}" for i in range(OBJECTS)]
    conn.executemany("INSERT INTO probe VALUES (?, 1, '{\"value\": 1}')", [(k,) for k in keys])
    values = dict.fromkeys(keys, 1)
    revs = dict.fromkeys(keys, 1)
    waiting: dict[str, list[asyncio.Future[None]]] = {}
    wakeup = asyncio.Event()
    rnd = random.Random(2).randrange
    acked = 0
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="probe-writer")
    loop = asyncio.get_running_loop()

    def write(rows: list[tuple[int, str, str]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("UPDATE probe SET rev = ?, state = ? WHERE key = ?",
                         [(rev, state, key) for rev, state, key in rows])
        conn.execute("COMMIT")

    async def writer() -> None:
        nonlocal waiting
        while True:
            if not waiting:
                wakeup.clear()
                await wakeup.wait()
            batch, waiting = waiting, {}
            rows = [(revs[k], json.dumps({"value": values[k]}), k) for k in batch]
            await loop.run_in_executor(executor, write, rows)
            for futures in batch.values():
                for fut in futures:
                    fut.set_result(None)

    async def call(_: int) -> None:
        nonlocal acked
        key = keys[rnd(OBJECTS)]
        values[key] += 1  # the turn
        revs[key] += 1
        fut = loop.create_future()
        queued = waiting.get(key)
        if queued is None:
            waiting[key] = [fut]
            wakeup.set()
        else:
            queued.append(fut)
        await fut
        acked += 1

    task = asyncio.create_task(writer())
    try:
        run = await closed_loop(CALLERS, duration, call, warmup=warmup)
    finally:
        task.cancel()
        executor.shutdown()
    stored = conn.execute("SELECT sum(json_extract(state, '$.value')) FROM probe").fetchone()[0]
    conn.close()
    _check(stored == OBJECTS + acked, f"probe: stored sum {stored} != {OBJECTS + acked}")
    return run


# -- the baseline: what a FastAPI user writes today ------------------------------------------


async def bench_baseline(folder: str, name: str, duration: float, warmup: float) -> Run:
    """A SQLAlchemy session per call doing ``UPDATE ... RETURNING`` and committing it."""
    path = os.path.join(folder, f"{name}.db")
    conn = _connect(path)
    conn.execute("CREATE TABLE counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    conn.executemany("INSERT INTO counters VALUES (?, 0)", [(f"k{i}",) for i in range(OBJECTS)])
    conn.close()
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 30})

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    sessions = async_sessionmaker(engine, expire_on_commit=False)
    stmt = sa.text("UPDATE counters SET value = value + 1 WHERE key = :k RETURNING value")
    rnd = random.Random(1).randrange
    acked = 0

    async def call(_: int) -> None:
        nonlocal acked
        async with sessions() as session, session.begin():
            (await session.execute(stmt, {"k": f"k{rnd(OBJECTS)}"})).scalar_one()
        acked += 1

    try:
        run = await closed_loop(CALLERS, duration, call, warmup=warmup)
    finally:
        await engine.dispose()
    conn = sqlite3.connect(path)
    stored = conn.execute("SELECT sum(value) FROM counters").fetchone()[0]
    conn.close()
    _check(stored == acked, f"baseline: stored sum {stored} != {acked}")
    return run


# -- the runtime -------------------------------------------------------------------------------


def _time_commits(rt: Runtime) -> list[float]:
    seconds: list[float] = []
    commit = rt.storage.commit

    async def timed(*args: Any, **kwargs: Any) -> list[bool]:
        t = time.perf_counter()
        try:
            return await commit(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - t)

    rt.storage.commit = timed  # type: ignore[method-assign]
    return seconds


async def bench_runtime(
    folder: str, name: str, keys: list[str], callers: int, duration: float, warmup: float
) -> tuple[Run, str]:
    """``callers`` closed-loop callers of ``increment(1)`` over ``keys`` (created first)."""
    path = os.path.join(folder, f"{name}.db")
    rnd = random.Random(2).randrange
    acked = 0
    async with Runtime(objects=[Counter], database_url=f"sqlite+aiosqlite:///{path}") as rt:
        sem = asyncio.Semaphore(CALLERS)

        async def create(key: str) -> None:
            async with sem:
                await rt.get(Counter, key).increment(1)

        await asyncio.gather(*(create(k) for k in keys))

        async def call(_: int) -> None:
            nonlocal acked
            await rt.get(Counter, keys[rnd(len(keys))]).increment(1)
            acked += 1

        seconds = _time_commits(rt)
        run = await closed_loop(callers, duration, call, warmup=warmup)
        stats = rt.stats()
    conn = sqlite3.connect(path)
    stored = conn.execute(
        "SELECT sum(json_extract(state, '$.value')) FROM objects_checkpoints"
    ).fetchone()[0]
    conn.close()
    _check(stored == len(keys) + acked, f"{name}: stored sum {stored} != {len(keys) + acked}")
    ordered = sorted(seconds)
    p50 = ordered[len(ordered) // 2] * 1000 if ordered else float("nan")
    most = ordered[-1] * 1000 if ordered else float("nan")
    note = (f"{name}: {stats.commits / max(stats.batches, 1):.1f} objects per transaction, "
            f"storage.commit() p50 {fmt_ms(p50)} max {fmt_ms(most)}, "
            f"{run.cpu_us_per_call:,.0f} us of CPU per call, machine {run.machine_busy:.0%} "
            f"busy; the stored sum equals every acknowledged call ({stored:,})")
    return run, note


# -- main ------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    duration = 2.0 if args.quick else args.duration
    warmup = 0.5 if args.quick else 1.0
    folder = tempfile.mkdtemp(prefix="bench_sqlite_", dir=args.dir)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    log(f"fastapi_objects {revision()}, SQLite {sqlite3.sqlite_version}, files in {folder}, "
         f"load average {load:.2f}")
    rows: list[list[str]] = []
    notes: list[str] = []
    try:
        log("probe: bare sqlite3 group commit")
        probe = await bench_probe(folder, duration, warmup)
        log("baseline: SQLAlchemy commit per call")
        base1 = await bench_baseline(folder, "baseline1", duration, warmup)
        log("runtime: 64 callers over 1,000 objects")
        keys = [f"c{i}" for i in range(OBJECTS)]
        durable, note = await bench_runtime(folder, "durable", keys, CALLERS, duration, warmup)
        notes.append(note)
        log("runtime: one caller")
        single, note = await bench_runtime(folder, "single", keys[:100], 1, duration, warmup)
        notes.append(note)
        log("runtime: 64 callers on one object")
        hot, note = await bench_runtime(folder, "hot", ["hot"], CALLERS, duration, warmup)
        notes.append(note)
        log("baseline again")
        base2 = await bench_baseline(folder, "baseline2", duration, warmup)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    base = (base1.rate + base2.rate) / 2

    def row(name: str, run: Run, value: str, target: str, ok: bool | None) -> None:
        verdict = "" if ok is None else ("PASS" if ok else "MISS")
        rows.append([name, value, fmt_ms(run.pct_ms(50)), fmt_ms(run.pct_ms(99)),
                     target, verdict])

    row("probe: bare sqlite3 group commit, 64 callers over 1,000 keys", probe,
        f"{probe.rate:,.0f} calls/s", "(reference)", None)
    row("baseline: SQLAlchemy commit per call (before / after)", base1,
        f"{base1.rate:,.0f} / {base2.rate:,.0f} calls/s", "(reference)", None)
    share, ratio = durable.rate / probe.rate, durable.rate / base
    row("durable increment, 64 callers over 1,000 objects", durable,
        f"{durable.rate:,.0f} calls/s = {share:.0%} of probe = {ratio:.1f}x baseline",
        ">= 50% of probe, >= 5x baseline", share >= 0.5 and ratio >= 5)
    row("durable increment, 1 caller", single, f"{single.rate:,.0f} calls/s", "(context)", None)
    row("durable increment, 64 callers on ONE object", hot, f"{hot.rate:,.0f} calls/s",
        "(context)", None)
    print()
    print(table(rows, ["figure", "value", "p50", "p99", "target", ""]))
    print()
    for note in notes:
        print(f"- {note}")
    print(f"- probe: {probe.cpu_us_per_call:,.0f} us of CPU per call; baseline "
          f"{base1.cpu_us_per_call:,.0f} us")
    print(f"\nload average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
          f"{time.perf_counter() - started:.0f} s")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per figure (default 4)")
    p.add_argument("--quick", action="store_true", help="2 s per figure")
    p.add_argument("--dir", default=None, help="where the SQLite files go (default: the temp dir)")
    add_loop_option(p)
    return p.parse_args()


if __name__ == "__main__":
    run_on_loop(main, _parse())
