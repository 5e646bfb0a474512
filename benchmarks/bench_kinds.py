"""Memory objects against durable ones (issue 17): the same counter, the same runtime, one run.

    python benchmarks/bench_kinds.py [--database-url URL] [--duration 4] [--quick]

A memory object (``persistence = "memory"``) is owned and run turn by turn like a durable one
but writes nothing, so its answer leaves when its turn ends instead of after a group commit.
Each figure is measured for both kinds, alternating, on SQLite (a fresh file, WAL,
``synchronous=FULL``) and, when ``--database-url`` names one, PostgreSQL (a fresh schema,
dropped at the end): 64 callers over 1,000 objects, and one caller on one object (the
latency of one answer). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import tempfile
import time
from typing import Any

from _common import (  # the script's folder is on sys.path
    Run,
    add_loop_option,
    closed_loop,
    drop_schema,
    fmt_ms,
    fresh_schema_name,
    log,
    revision,
    run_on_loop,
    table,
)
from bench_sqlite import CALLERS, OBJECTS, Counter  # its counter, measured durable there

from fastapi_objects.runtime import DurableObject, Runtime

Durable = Counter


class Memory(Counter):
    type_name = "bench_memory"
    persistence = "memory"


async def _measure(
    url: str, schema: str | None, cls: type[DurableObject[Any]], callers: int, objects: int,
    duration: float, warmup: float,
) -> Run:
    """``callers`` callers incrementing ``objects`` objects of ``cls`` on one runtime."""
    async with Runtime(objects=[cls], database_url=url, schema=schema,
                       create_tables=True) as rt:
        handles = [rt.get(cls, f"c{i}") for i in range(objects)]
        await asyncio.gather(*(h.increment() for h in handles))  # every object live first

        async def call(i: int) -> None:
            await handles[random.randrange(objects)].increment()

        # (a memory object's call never suspends: without a yield one caller would run alone)
        run = await closed_loop(callers, duration, call, warmup=warmup, yield_between=True)
        if cls is Memory:
            assert rt.stats().commits == 0, "a memory object committed"
        return run


async def _database(
    name: str, url: str, schema: str | None, duration: float, warmup: float,
    rows: list[list[str]],
) -> None:
    for what, callers, objects in [
        (f"{CALLERS} callers over {OBJECTS:,} objects", CALLERS, OBJECTS),
        ("1 caller, one object", 1, 1),
    ]:
        runs: dict[type[DurableObject[Any]], list[Run]] = {Durable: [], Memory: []}
        for cls in (Durable, Memory, Durable, Memory):  # alternating: the load moves
            log(f"{name}: {'memory' if cls is Memory else 'durable'}, {what}")
            runs[cls].append(await _measure(url, schema, cls, callers, objects, duration, warmup))
        durable = max(runs[Durable], key=lambda r: r.rate)
        memory = max(runs[Memory], key=lambda r: r.rate)
        for label, run in (("durable", durable), ("memory", memory)):
            rows.append([
                f"{name}: {label} increment, {what}", f"{run.rate:,.0f} calls/s",
                fmt_ms(run.pct_ms(50)), fmt_ms(run.pct_ms(99)),
                f"{run.cpu_us_per_call:,.0f} us",
            ])
        rows.append([
            f"{name}: memory / durable, {what}", f"{memory.rate / durable.rate:.1f}x calls/s",
            f"1/{durable.pct_ms(50) / memory.pct_ms(50):.0f}", "",
            f"{memory.cpu_us_per_call / durable.cpu_us_per_call:.2f}x",
        ])


async def main(args: argparse.Namespace) -> None:
    duration = 2.0 if args.quick else args.duration
    warmup = 0.5 if args.quick else 1.0
    load = os.getloadavg()[0]
    started = time.perf_counter()
    log(f"fastapi_objects {revision()}, load average {load:.2f}")
    rows: list[list[str]] = []
    folder = tempfile.mkdtemp(prefix="bench_kinds_")
    try:
        url = f"sqlite+aiosqlite:///{os.path.join(folder, 'kinds.db')}"
        await _database("SQLite", url, None, duration, warmup, rows)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.database_url:
        schema = fresh_schema_name("kinds")
        try:
            await _database("PostgreSQL", args.database_url, schema, duration, warmup, rows)
        finally:
            await drop_schema(args.database_url, schema)
    print()
    print(table(rows, ["figure", "value", "p50", "p99", "CPU per call"]))
    print("\n- each row is the better of two runs, durable and memory alternating; "
          "a memory object made no commit (checked)")
    print(f"\nload average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
          f"{time.perf_counter() - started:.0f} s")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", default=None,
                   help="also measure on this PostgreSQL (postgresql+asyncpg://...)")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per run (default 4)")
    p.add_argument("--quick", action="store_true", help="2 s per run")
    add_loop_option(p)
    return p.parse_args()


if __name__ == "__main__":
    run_on_loop(main, _parse())
