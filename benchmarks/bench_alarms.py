"""Alarm lag, on PostgreSQL (queue throughput is measured by bench_queue.py).

Alarms: 10,000 alarms due within one second over 1,000 objects.

Each object sets 10 alarms spread over one second; the figure is how long after its due time
each alarm's ``on_alarm`` ran (lag p50/p99) and how long until all had fired. Two cases: the
objects stay active (the owner's timers fire them) and the objects hibernated first (the
node's poller finds and delivers them). The baseline in the same run is the loop's own timer
lag for 10,000 ``call_at`` callbacks spread the same way.

    .venv/bin/python benchmarks/bench_alarms.py [--objects 1000] [--per-object 10]
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


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--per-object", type=int, default=10)
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
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
