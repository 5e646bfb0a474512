"""Thaw storms: activations are claimed and loaded in batches, and one corrupt object fails
only its own activation (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

import asyncpg
import sqlalchemy as sa

from fastapi_objects import Runtime
from fastapi_objects._exceptions import CorruptState
from fastapi_objects.storage import open_storage
from tests._apps import Counter
from tests._support import wait_until
from tests.conftest import Backend


def _rt(backend: Backend) -> Runtime:
    return Runtime(objects=[Counter], database_url=backend.url, schema=backend.schema,
                   create_tables=True)


async def test_a_thaw_storm_is_claimed_and_loaded_in_batches(sql_backend: Backend) -> None:
    keys = [f"k{i}" for i in range(300)]
    async with _rt(sql_backend) as rt:
        await asyncio.gather(*(rt.get(Counter, k).increment(1) for k in keys))
    async with _rt(sql_backend) as rt:  # a restart: every object thaws at once
        values = await asyncio.gather(*(rt.get(Counter, k).increment(1) for k in keys))
        assert values == [2] * len(keys)
        assert rt._host.thawer.batches < len(keys) / 5, rt._host.thawer.batches
        assert rt.stats().thaws == len(keys)


async def _corrupt(backend: Backend, key: str) -> None:
    if backend.name == "sqlite":
        path = backend.url.split("///", 1)[1]
        engine = sa.create_engine(f"sqlite:///{path}")
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE objects_checkpoints SET state = '{\"value\": 1' "
                                 "WHERE key = :k"), {"k": key})
        engine.dispose()
    else:  # jsonb takes a number Python cannot parse back (what 4,300+ digits did)
        conn = await asyncpg.connect(backend.url.replace("postgresql+asyncpg", "postgresql"))
        try:
            await conn.execute(
                f'UPDATE "{backend.schema}".objects_checkpoints '
                f"SET state = jsonb_build_object('value', repeat('9', 5000)::numeric) "
                "WHERE key = $1", key,
            )
        finally:
            await conn.close()


async def test_one_corrupt_object_fails_only_itself(sql_backend: Backend) -> None:
    keys = [f"k{i}" for i in range(20)]
    async with _rt(sql_backend) as rt:
        await asyncio.gather(*(rt.get(Counter, k).increment(1) for k in keys))
    await _corrupt(sql_backend, "k7")
    async with _rt(sql_backend) as rt:
        results = await asyncio.gather(
            *(rt.get(Counter, k).increment(1) for k in keys), return_exceptions=True
        )
    bad = results.pop(7)
    assert isinstance(bad, CorruptState) and "counter:k7" in str(bad), bad
    assert results == [2] * 19
    storage = open_storage(sql_backend.url, schema=sql_backend.schema)
    try:
        assert (await storage.load("counter", "k8")) is not None
    finally:
        await storage.close()


class Napper(Counter):
    """Hibernates soon after each call."""

    type_name = "napper"
    idle_timeout = 0.2


async def _listed(rt: Runtime, key: str) -> tuple[str, list[tuple[str, str, int]]]:
    page = await rt.query(Napper, key_prefix=key)
    stats = [(s.type, s.status, s.count) for s in await rt.type_stats() if s.type == "napper"]
    return page.items[0].status, stats


async def test_a_thaw_that_writes_nothing_lists_the_object_active(backend: Backend) -> None:
    # "active" comes from the claim that every thaw makes, not from a write of its own.
    async with Runtime(objects=[Napper], database_url=backend.url, schema=backend.schema,
                       create_tables=True) as rt:
        await rt.get(Napper, "n1").increment(1)
        assert await _listed(rt, "n1") == ("active", [("napper", "active", 1)])
        await wait_until(lambda: rt.stats().hibernations >= 1)
        assert await _listed(rt, "n1") == ("hibernated", [("napper", "hibernated", 1)])
        assert [c.key for c in (await rt.query(Napper, status="hibernated")).items] == ["n1"]
        assert await rt.get(Napper, "n1").get() == 1  # read-only: a thaw, no commit
        assert await _listed(rt, "n1") == ("active", [("napper", "active", 1)])
        assert (await rt.query(Napper, status="hibernated")).items == []
        assert [c.key for c in (await rt.query(Napper, status_in=["active"])).items] == ["n1"]
        assert (await rt.storage.load("napper", "n1")).status == "active"  # type: ignore[union-attr]
        await wait_until(lambda: rt.stats().hibernations >= 2)
        assert await _listed(rt, "n1") == ("hibernated", [("napper", "hibernated", 1)])
