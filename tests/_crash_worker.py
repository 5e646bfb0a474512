"""Child process of tests/test_crash.py: concurrent durable increments until it is killed.

Usage: python tests/_crash_worker.py DATABASE_URL SCHEMA|- KEYS CALLERS

Prints ``ready`` once started, then ``key value`` after every increment whose result was
returned (acknowledged), flushing each line so the parent sees it before any later kill.
"""

from __future__ import annotations

import asyncio
import random
import sys

from pydantic import BaseModel

from fastapi_objects.runtime import DurableObject, Runtime, readonly


class TallyState(BaseModel):
    value: int = 0


class Tally(DurableObject[TallyState]):
    idle_timeout = 0.2  # some objects hibernate and thaw while the others are busy

    async def increment(self) -> int:
        self.state.value += 1
        self.record("inc", self.state.value)
        return self.state.value

    @readonly
    async def read(self) -> int:
        return self.state.value


async def _main(url: str, schema: str | None, keys: int, callers: int) -> None:
    async with Runtime(
        objects=[Tally], database_url=url, schema=schema, create_tables=True
    ) as runtime:
        print("ready", flush=True)

        async def caller(seed: int) -> None:
            rng = random.Random(seed)
            while True:
                key = f"k{rng.randrange(keys)}"
                value = await runtime.get(Tally, key).increment()
                sys.stdout.write(f"{key} {value}\n")
                sys.stdout.flush()

        await asyncio.gather(*(caller(seed) for seed in range(callers)))


if __name__ == "__main__":
    url, schema, keys, callers = sys.argv[1:5]
    asyncio.run(_main(url, None if schema == "-" else schema, int(keys), int(callers)))
