"""Memory of idle live objects: N objects activated on one node, and the process's RSS.

    python benchmarks/bench_memory.py [--objects 1000000] [--database-url URL]

Activates N new objects (a read-only call on each: nothing is committed, every call is a
thaw) on a fresh SQLite file (or the given database), with ``max_active`` and
``idle_timeout`` above N so that they all stay live, then prints the RSS growth per object and
the process's whole RSS. Target (issue 13): 1,000,000 idle objects in <= 2 GB of RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import tempfile
import time

from _common import add_loop_option, log, rss_bytes, run_on_loop  # the script's folder
from pydantic import BaseModel

from fastapi_objects.runtime import DurableObject, Runtime, readonly


class SmallState(BaseModel):
    value: int = 0


class Idle(DurableObject[SmallState]):
    type_name = "bench_idle"
    idle_timeout = 86_400.0

    @readonly
    async def get(self) -> int:
        return self.state.value


async def main(args: argparse.Namespace) -> None:
    folder = None
    url = args.database_url
    if url is None:
        folder = tempfile.mkdtemp(prefix="bench_memory_")
        url = f"sqlite+aiosqlite:///{folder}/objects.db"
    n = args.objects
    log(f"{n:,} objects on {url.split('://')[0]}, load average {os.getloadavg()[0]:.2f}")
    try:
        async with Runtime(objects=[Idle], database_url=url, max_active=n + 10_000,
                           create_tables=True) as rt:
            keys = iter(f"m{i:08d}" for i in range(n))

            async def caller() -> None:
                for key in keys:
                    await rt.get(Idle, key).get()

            await rt.get(Idle, "warm").get()
            gc.collect()
            before = rss_bytes()
            started = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(64)))
            seconds = time.perf_counter() - started
            gc.collect()
            after = rss_bytes()
            active = rt.stats().active
        if active != n + 1:
            raise SystemExit(f"CHECK FAILED: {active} objects live, expected {n + 1}")
        per = (after - before) / n
        print(f"\n{n:,} idle live objects: RSS {after / 2**30:.2f} GiB in all "
              f"({before / 2**20:.0f} MiB before them), {per:,.0f} bytes per object; "
              f"activated in {seconds:.0f} s ({n / seconds:,.0f}/s)")
        projected = before + per * 1_000_000
        print(f"1,000,000 objects: {projected / 1e9:.2f} GB of RSS "
              f"{'measured' if n == 1_000_000 else 'projected from this run'} (target <= 2 GB: "
              f"{'PASS' if projected <= 2e9 else 'MISS'})")
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    log(f"load average {os.getloadavg()[0]:.2f} at the end")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objects", type=int, default=1_000_000, help="how many (default 1,000,000)")
    p.add_argument("--database-url", default=None,
                   help="storage (default: a fresh SQLite file in a temporary folder)")
    add_loop_option(p)
    return p.parse_args()


if __name__ == "__main__":
    run_on_loop(main, _parse())
