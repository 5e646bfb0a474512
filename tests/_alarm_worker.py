"""Child process of tests/test_alarms.py: sets alarms on five objects, then waits to be killed.

Usage: python tests/_alarm_worker.py DATABASE_URL SCHEMA|- DELAY
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi_objects.runtime import Runtime
from tests.test_alarms import Reminder


async def _main(url: str, schema: str | None, delay: float) -> None:
    async with Runtime(objects=[Reminder], database_url=url, schema=schema, node_ttl=1.0,
                       create_tables=True) as rt:
        for i in range(5):
            await rt.get(Reminder, f"k{i}").remind("x", delay)
        print("ready", flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    url, schema, delay = sys.argv[1:]
    asyncio.run(_main(url, None if schema == "-" else schema, float(delay)))
