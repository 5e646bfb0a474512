"""Memory objects (issue 17, ``persistence = "memory"``): one owned, routed instance that
writes nothing, answers without a commit and starts fresh after hibernating or its owner
stopping; journals and alarms are refused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from fastapi_objects import DurableObject, EventSourced, Runtime, readonly
from fastapi_objects.storage import Alarm
from tests._support import wait_until
from tests.conftest import Backend


class RateState(BaseModel):
    hits: int = 0


class Rate(DurableObject[RateState]):
    """A per-key rate counter: losing it on a restart is fine, a commit per hit is not."""

    persistence = "memory"
    idle_timeout = 60.0

    async def hit(self, fail: bool = False) -> int:
        self.state.hits += 1
        self.broadcast("hit", {"hits": self.state.hits})
        if fail:
            raise ValueError("rolled back")
        return self.state.hits

    @readonly
    async def hits(self) -> int:
        return self.state.hits

    @readonly
    async def node(self) -> str:
        return self.objects.node_id

    async def journal(self) -> None:
        self.record("hit", {})

    async def remind(self) -> None:
        self.set_alarm("later", delay=60)


def _rt(backend: Backend, *objects: type[DurableObject[Any]], **options: Any) -> Runtime:
    return Runtime(objects=list(objects) or [Rate], database_url=backend.url,
                   schema=backend.schema, create_tables=True, **options)


async def test_state_lives_in_memory_and_nothing_is_written(backend: Backend) -> None:
    async with _rt(backend) as rt:
        rate = rt.get(Rate, "ip:1")
        async with rt.subscribe("rate:ip:1") as sub:
            assert [await rate.hit() for _ in range(5)] == [1, 2, 3, 4, 5]
            assert [(await sub.get()).payload for _ in range(5)][-1] == {"hits": 5}
        with pytest.raises(ValueError, match="rolled back"):
            await rate.hit(fail=True)  # a raising turn is rolled back, as on any object
        assert await rate.hits() == 5
        # No checkpoint, no journal, no commit: answers did not wait for a database write.
        assert await rt.storage.load("rate", "ip:1") is None
        assert await rt.storage.read_journal("rate", "ip:1") == []
        assert (rt.stats().commits, rt.stats().batches) == (0, 0)
        # Still owned, so that no other node runs a second instance.
        assert await rt.storage.owners([("rate", "ip:1")]) == {("rate", "ip:1"): rt.node_id}


async def test_hibernation_ends_it_and_releases_it(backend: Backend) -> None:
    class Brief(Rate):
        type_name = "brief"
        idle_timeout = 0.05

    async with _rt(backend, Brief) as rt:
        brief = rt.get(Brief, "k")
        assert [await brief.hit(), await brief.hit()] == [1, 2]
        await wait_until(lambda: rt.stats().hibernations == 1, what="hibernation")
        assert await rt.storage.owners([("brief", "k")]) == {}  # released
        assert await brief.hit() == 1  # fresh
        assert rt.stats().commits == 0


async def test_delete_ends_it(backend: Backend) -> None:
    async with _rt(backend) as rt:
        await rt.get(Rate, "k").hit()
        await rt.delete(Rate, "k")
        assert await rt.get(Rate, "k").hit() == 1


async def test_journal_and_alarms_are_refused(backend: Backend) -> None:
    async with _rt(backend) as rt:
        with pytest.raises(TypeError, match=r"Rate\.record\(\): a memory object"):
            await rt.get(Rate, "k").journal()
        with pytest.raises(TypeError, match=r"a memory object .* no alarms"):
            await rt.get(Rate, "k").remind()
        assert await rt.get(Rate, "k").hits() == 0  # both turns rolled back


def test_class_definitions_that_cannot_work_are_refused() -> None:
    class Events(BaseModel):
        n: int = 0

    with pytest.raises(TypeError, match="cannot be persistence = 'memory': it is EventSourced"):
        class Log(EventSourced[RateState, Events]):
            persistence = "memory"

    with pytest.raises(TypeError, match="it defines on_alarm"):
        class Ring(DurableObject[RateState]):
            persistence = "memory"

            async def on_alarm(self, alarm: Alarm) -> None:
                pass

    with pytest.raises(TypeError, match="it sets expire_after"):
        class Session(DurableObject[RateState]):
            persistence = "memory"
            expire_after = timedelta(minutes=5)

    with pytest.raises(TypeError, match="persistence must be 'durable' or 'memory'"):
        class Odd(DurableObject[RateState]):
            persistence = "disk"  # type: ignore[assignment]


async def test_one_instance_in_a_cluster_forwarded_and_fresh_after_its_owner_stops(
    durable: Backend,
) -> None:
    async with _rt(durable, node_id="a") as a:
        async with _rt(durable, node_id="b") as b:
            assert await a.get(Rate, "k").hit() == 1  # a owns it
            # Calls through b reach a's instance: one state, however many nodes.
            assert [await b.get(Rate, "k").hit() for _ in range(3)] == [2, 3, 4]
            assert await b.get(Rate, "k").node() == "a"
            assert b.stats().forwarded >= 4 and not b._host.activations
            assert await a.get(Rate, "k").hits() == 4
        async with _rt(durable, node_id="c") as c:
            assert await c.get(Rate, "k").node() == "a"
            await a.close()  # a stops: its instance ends and is released
            assert await c.get(Rate, "k").hit() == 1  # fresh, on c now
            assert await c.get(Rate, "k").node() == "c"
            assert (a.stats().commits, c.stats().commits) == (0, 0)


async def test_what_a_durable_class_of_its_type_stored_is_not_read(durable: Backend) -> None:
    class Durable(DurableObject[RateState]):
        type_name = "switched"

        async def hit(self) -> int:
            self.state.hits += 1
            return self.state.hits

    class Memory(Rate):
        type_name = "switched"  # the same type, made a memory object by a later deploy

    async with _rt(durable, Durable) as rt:
        assert [await rt.get(Durable, "k").hit() for _ in range(2)] == [1, 2]
    async with _rt(durable, Memory) as rt:
        assert await rt.get(Memory, "k").hit() == 1  # it starts fresh: memory objects read nothing
