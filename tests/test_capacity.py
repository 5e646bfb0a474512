"""No client can exhaust a node by creating objects: ``max_active``, and no owner rows left.

Every attach or call to a new key activates an object. A node holds at most ``max_active``
objects: past it the least recently used idle one hibernates to make room, and only when none
can does a call get ``Overloaded``. An object that was never committed leaves no owner row
behind when it hibernates (its node releases it), nor when its node died (pruned).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from pydantic import BaseModel

from fastapi_objects import DurableObject, Overloaded, Runtime
from fastapi_objects.storage import Storage
from tests._support import Recorder
from tests.conftest import Backend

TTL = 10.0


class CountState(BaseModel):
    value: int = 0


class Tally(DurableObject[CountState]):
    public = True
    idle_timeout = 3600.0  # only eviction makes room in these tests

    async def add(self, by: int = 1) -> int:
        self.state.value += by
        return self.state.value

    async def hold(self, release: float) -> int:
        await asyncio.sleep(release)
        return self.state.value


def _runtime(backend: Backend, **options: Any) -> Runtime:
    return Runtime(objects=[Tally], database_url=backend.url, schema=backend.schema,
                   create_tables=True, **options)


async def _owner_rows(storage: Storage, idents: list[tuple[str, str]]) -> int:
    # owners() lists objects with an owner; a released row has none, so ask for the epoch too.
    owned = await storage.owners(idents)
    claims_left = 0
    for ident in idents:
        claim = await storage.claim(ident[0], ident[1], "probe", TTL)
        # A row left behind gives the next claim epoch > 1; a fresh row starts at 1.
        claims_left += claim.epoch > 1
    return len(owned) + claims_left


async def test_past_max_active_the_least_recently_used_object_makes_room(
    backend: Backend,
) -> None:
    async with _runtime(backend, max_active=10) as rt:
        for i in range(40):
            assert await rt.get(Tally, f"k{i}").add(i) == i
            assert rt.stats().active <= 11  # the new one, while the evicted one leaves
        await asyncio.sleep(0)
        stats = rt.stats()
        assert stats.evictions >= 30
        # Evicted objects were durable: they thaw with what they had.
        for i in range(40):
            assert await rt.get(Tally, f"k{i}").add(1) == i + 1


async def test_a_busy_node_answers_overloaded_instead_of_growing(backend: Backend) -> None:
    async with _runtime(backend, max_active=2) as rt:
        held = [asyncio.create_task(rt.get(Tally, f"busy{i}").hold(0.5)) for i in range(2)]
        while rt.stats().active < 2:  # noqa: ASYNC110 - the calls activate them
            await asyncio.sleep(0.01)
        with pytest.raises(Overloaded, match="max_active=2"):
            await rt.get(Tally, "third").add()
        assert await asyncio.gather(*held) == [0, 0]
        assert await rt.get(Tally, "third").add() == 1  # room again once they are idle


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"], indirect=True)
async def test_10000_attaches_to_random_keys_leave_memory_bounded_and_no_owner_row(
    backend: Backend,
) -> None:
    keys = [f"r{random.getrandbits(64):x}" for _ in range(10_000)]
    peak = 0
    async with _runtime(backend, max_active=100) as rt:
        rt_keys = iter(keys)

        async def client() -> None:
            nonlocal peak
            for key in rt_keys:
                conn = await rt.gateway.attach(Tally, key, Recorder())
                peak = max(peak, rt.stats().active)
                await rt.gateway.detach(conn)

        await asyncio.gather(*(client() for _ in range(32)))
        assert peak <= 100 + 32  # the cap, plus the attaches in flight while victims leave
        storage = rt.storage
        idents = [("tally", key) for key in random.sample(keys, 200)]
    # Closed: every object hibernated, and none was ever committed: no row is left.
    if backend.name == "memory":
        return  # its storage went with the runtime; the row rule is in the contract suite
    from fastapi_objects.storage import open_storage

    store = open_storage(backend.url, schema=backend.schema)
    try:
        assert await _owner_rows(store, idents) == 0
    finally:
        await store.close()
    del storage


async def test_a_released_object_never_committed_leaves_no_owner_row(storage: Storage) -> None:
    from fastapi_objects.storage import StatusUpdate

    await storage.register_node("a", None, None, None)
    ghost = await storage.claim("tally", "ghost", "a", TTL)
    kept = await storage.claim("tally", "kept", "a", TTL)
    from pydantic_core import to_json

    from fastapi_objects.storage import Commit

    assert await storage.commit([Commit("tally", "kept", 0, 1, to_json({"value": 1}), 1, 0, 0,
                                        epoch=kept.epoch)], node_id="a") == [True]
    await storage.commit([], [StatusUpdate("tally", "ghost", "hibernated", ghost.epoch),
                              StatusUpdate("tally", "kept", "hibernated", kept.epoch)],
                         node_id="a")
    # The committed one keeps its row (its epoch goes on); the other starts again at 1.
    assert (await storage.claim("tally", "kept", "a", TTL)).epoch == kept.epoch + 1
    assert (await storage.claim("tally", "ghost", "a", TTL)).epoch == 1


async def test_prune_forgets_owner_rows_of_dead_nodes_objects_never_committed(
    storage: Storage,
) -> None:
    await storage.register_node("gone", None, None, None)
    first = await storage.claim("tally", "orphan", "gone", TTL)
    assert first.granted and first.epoch == 1
    await storage.deregister_node("gone")  # released: no owner, never committed
    await storage.register_node("b", None, None, None)
    again = await storage.claim("tally", "orphan", "b", TTL)
    assert again.epoch == 2  # the row was still there
    await storage.deregister_node("b")
    await storage.prune_nodes(0.0)
    assert (await storage.claim("tally", "orphan", "c", TTL)).epoch == 1  # pruned
