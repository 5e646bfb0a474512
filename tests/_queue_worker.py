"""Child process of tests/test_queue.py: a node whose workers take jobs until it is killed.

Usage: python tests/_queue_worker.py DATABASE_URL SCHEMA|-
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi_objects.runtime import Runtime
from fastapi_objects.runtime.queues import Claimed


async def _main(url: str, schema: str | None) -> None:
    rt = Runtime(database_url=url, schema=schema, node_ttl=1.0)

    @rt.worker("bulk", concurrency=4, lease=1.0)
    async def handle(job: Claimed) -> None:
        print(job.id, flush=True)
        await asyncio.sleep(0.02)

    async with rt:
        print("ready", flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    url, schema = sys.argv[1:]
    asyncio.run(_main(url, None if schema == "-" else schema))
