"""The app bench_http.py serves with uvicorn: objects, reference endpoints and the baseline.

Configured by environment: BENCH_DATABASE_URL (PostgreSQL, SQLite or memory://: no baseline
endpoint then), BENCH_SCHEMA (PostgreSQL only; empty otherwise), BENCH_GC (``freeze``:
``gc.freeze()`` once started, what an app may do; ``off``: ``gc.disable()``, a diagnostic only,
cycles are never freed). ``/stats`` also reports the cyclic GC's collections and their time,
timed with ``gc.callbacks`` in this process.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, FastAPI
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from fastapi_objects import DurableObject, Handle, Objects, get_object, readonly
from fastapi_objects.storage import create_engine

URL = os.environ["BENCH_DATABASE_URL"]
SCHEMA = os.environ.get("BENCH_SCHEMA") or None
SQLITE = URL.startswith("sqlite")
MEMORY = URL.startswith("memory")
GC = os.environ.get("BENCH_GC", "")


class _GCTimes:
    """The cyclic GC's full collections and its time in this process (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.full = 0
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._started
        self.full += info["generation"] == 2


gc_times = _GCTimes()
gc.callbacks.append(gc_times)


class CounterState(BaseModel):
    value: int = 0


class Counter(DurableObject[CounterState]):
    public = True

    async def increment(self, by: int = 1) -> int:
        self.state.value += by
        self.broadcast("changed", {"value": self.state.value})
        return self.state.value

    async def bump(self, by: int = 1) -> int:
        """``increment`` without its broadcast (a rung of bench_http's ladder)."""
        self.state.value += by
        return self.state.value

    @readonly
    async def peek(self) -> int:
        """A read-only call (a rung of bench_http's ladder)."""
        return self.state.value


class TickerState(BaseModel):
    ticks: int = 0


class Ticker(DurableObject[TickerState]):
    idle_timeout = 600.0
    public = True  # the fan-out clients attach to it (they call nothing)

    async def tick(self, t: float) -> int:
        self.state.ticks += 1
        self.broadcast("tick", {"t": t, "n": self.state.ticks})
        return self.state.ticks


objects = Objects(objects=[Counter, Ticker], database_url=URL, schema=SCHEMA, create_tables=True)
# The baseline's own engine, as a FastAPI user sets one up (SQLite: WAL, synchronous=FULL);
# none on memory://, which has no SQL baseline.
engine = (
    None if MEMORY else create_engine(URL) if SQLITE
    else create_async_engine(URL, pool_size=32, max_overflow=32)
)
sessions = None if engine is None else async_sessionmaker(engine, expire_on_commit=False)
TABLE = "baseline_counters" if SQLITE else f'"{SCHEMA}".baseline_counters'
UPDATE = sa.text(f"UPDATE {TABLE} SET value = value + :by WHERE key = :key RETURNING value")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with objects.lifespan(app):
        if GC == "freeze":  # bench_http.py --gc-freeze: what an app may do
            gc.freeze()  # what start-up made is never scanned again by the cyclic GC
        elif GC == "off":  # bench_http.py --gc-off: what the GC costs (a diagnostic only)
            gc.disable()
        yield
    if engine is not None:
        await engine.dispose()


app = FastAPI(lifespan=lifespan)
app.include_router(objects.router)


@app.post("/counters/{key}/increment")
async def increment(
    counter: Annotated[Handle[Counter], Depends(get_object(Counter))], by: int = 1
) -> dict[str, int]:
    return {"value": await counter.increment(by)}


class MemoryCounter:
    """The in-memory object of the reference route: a value per key, nothing durable."""

    def __init__(self) -> None:
        self.value = 0

    async def increment(self, by: int = 1) -> int:
        self.value += by
        return self.value


_memory: dict[str, MemoryCounter] = {}


async def memory_counter(key: str) -> MemoryCounter:
    """A dependency keyed by the path, as ``get_object`` is."""
    counter = _memory.get(key)
    if counter is None:
        counter = _memory[key] = MemoryCounter()
    return counter


@app.post("/memory/{key}/increment")
async def memory(
    counter: Annotated[MemoryCounter, Depends(memory_counter)], by: int = 1
) -> dict[str, int]:
    """The README's route shape on an in-memory object: what FastAPI itself costs."""
    return {"value": await counter.increment(by)}


@app.post("/plain/{key}/increment")
async def plain(key: str, by: int = 1) -> dict[str, int]:
    return {"value": by}


_waiting: list[asyncio.Future[int]] = []


async def _release_waiting() -> None:
    while True:
        await asyncio.sleep(0.001)
        batch = list(_waiting)
        _waiting.clear()
        for fut in batch:
            if not fut.done():
                fut.set_result(1)


@app.post("/suspend/{key}/increment")
async def suspend(key: str, by: int = 1) -> dict[str, int]:
    """Touches nothing, but waits like a durable call does: on a future released every 1 ms."""
    if getattr(app.state, "releaser", None) is None:
        app.state.releaser = asyncio.get_running_loop().create_task(_release_waiting())
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    _waiting.append(fut)
    return {"value": await fut}


@app.post("/baseline/{key}/increment")
async def baseline(key: str, by: int = 1) -> dict[str, int]:
    assert sessions is not None, "no SQL baseline on memory://"
    async with sessions() as session, session.begin():
        value = (await session.execute(UPDATE, {"key": key, "by": by})).scalar_one()
    return {"value": value}


@app.post("/tickers/{key}/tick")
async def tick(
    ticker: Annotated[Handle[Ticker], Depends(get_object(Ticker))], t: float
) -> dict[str, int]:
    return {"n": await ticker.tick(t)}


@app.get("/stats")
async def stats() -> dict[str, float]:
    """Commits and their transactions so far (how well this load groups its commits), and the
    cyclic GC's full collections and seconds so far."""
    now = objects.stats()
    return {"commits": now.commits, "batches": now.batches, "gc_full": gc_times.full,
            "gc_seconds": gc_times.seconds}


# The rungs of bench_http's ladder: the README's route with one layer at a time.
CounterHandle = Annotated[Handle[Counter], Depends(get_object(Counter))]


@app.post("/readonly/{key}/increment")
async def readonly_call(counter: CounterHandle, by: int = 1) -> dict[str, int]:
    """``Depends(get_object)`` and a read-only call: no turn, no commit."""
    return {"value": await counter.peek()}


@app.post("/quiet/{key}/increment")
async def quiet(counter: CounterHandle, by: int = 1) -> dict[str, int]:
    """A durable call without a broadcast."""
    return {"value": await counter.bump(by)}
