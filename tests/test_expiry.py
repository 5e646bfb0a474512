"""Expiring objects (issue 17, ``expire_after``): deleted, fenced like ``objects.delete``, once
left that long without calls or clients — live, hibernated, or after a restart or a crash.

Time is the runtime's clock, which each test sets (``Clock``): an object is made to have been
used hours ago by a runtime whose clock is behind, and the expiry is decided by one whose clock
is not. Nothing sleeps through an ``expire_after``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from fastapi_objects import DurableObject, Runtime, readonly
from fastapi_objects.runtime.connection import Connection
from fastapi_objects.storage import Alarm, ObjectQuery, Storage, open_storage
from tests._support import Recorder, wait_until
from tests.conftest import Backend

HOUR = timedelta(hours=1)
EXPIRE = "objects:expire"


class Clock:
    """A runtime's wall clock, ``offset`` from the real one (the test moves it)."""

    def __init__(self, offset: timedelta = timedelta()) -> None:
        self.offset = offset

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


class CartState(BaseModel):
    items: list[str] = []


class Cart(DurableObject[CartState]):
    """A visitor's cart: kept while the visitor comes back, deleted an hour after they left."""

    expire_after = HOUR
    idle_timeout = 0.05  # hibernates as soon as it is idle

    async def add(self, item: str) -> list[str]:
        self.state.items.append(item)
        self.record("added", {"item": item})
        self.set_alarm("abandoned", delay=24 * 3600)  # a user alarm beside the expiry
        return self.state.items

    @readonly
    async def items(self) -> list[str]:
        return self.state.items

    @readonly
    async def alarm_names(self) -> list[str]:
        return [alarm.name for alarm in self.alarms()]

    async def on_alarm(self, alarm: Alarm) -> None:
        pass

    async def misuse(self, name: str) -> None:
        self.cancel_alarm(name)


def _rt(
    backend: Backend, clock: Clock | None = None, *objects: type[DurableObject[Any]],
    **options: Any,
) -> Runtime:
    rt = Runtime(objects=list(objects) or [Cart], database_url=backend.url,
                 schema=backend.schema, create_tables=True, **options)
    if clock is not None:
        rt._host.clock = clock
    return rt


async def _expiry(storage: Storage, key: str, type: str = "cart") -> Alarm | None:
    return next((a for a in await storage.load_alarms(type, key) if a.name == EXPIRE), None)


async def _gone(storage: Storage, key: str) -> bool:
    return (
        await storage.load("cart", key) is None and await storage.read_journal("cart", key) == []
        and await storage.load_alarms("cart", key) == []
    )


async def _wait_gone(storage: Storage, key: str) -> None:
    async def check() -> bool:
        return await _gone(storage, key)

    for _ in range(500):  # 10 s
        if await check():
            return
        await _sleep(0.02)
    pytest.fail(f"{key} was not deleted")


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def _near(a: datetime, b: datetime) -> bool:
    return abs((a - b).total_seconds()) < 10


async def test_a_hibernated_object_expires_an_hour_after_its_last_use(backend: Backend) -> None:
    clock = Clock(-3 * HOUR)  # three hours ago, for this node
    async with _rt(backend, clock) as rt:
        cart = rt.get(Cart, "v1")
        await cart.add("book")
        await wait_until(lambda: rt.stats().hibernations == 1, what="hibernation")
        # Due an hour after its first commit, by the database's time an hour ago: the poller
        # delivers it at once. For this node the cart was just used: its owner keeps it.
        await wait_until(lambda: rt.stats().thaws >= 2, what="the expiry's delivery")
        assert await rt.storage.load("cart", "v1") is not None and rt.stats().expired == 0
        clock.offset += timedelta(minutes=59)  # the visitor comes back 59 minutes later
        assert await cart.add("pen") == ["book", "pen"]
        used = clock()
        for _ in range(500):  # its hibernation stores the expiry an hour after this use
            expiry = await _expiry(rt.storage, "v1")
            if expiry is not None and _near(expiry.due_at, used + HOUR):
                break
            await _sleep(0.02)
        else:
            pytest.fail(f"the expiry was not moved to {used + HOUR}: {expiry}")
        clock.offset += timedelta(minutes=58)  # 58 minutes after its last use
        thaws = rt.stats().thaws
        await wait_until(lambda: rt.stats().thaws >= thaws + 2, what="two more deliveries")
        assert await rt.storage.load("cart", "v1") is not None and rt.stats().expired == 0
        clock.offset += timedelta(minutes=3)  # 61 minutes after it
        await _wait_gone(rt.storage, "v1")  # state, journal, alarms
        assert rt.stats().expired == 1
        assert await rt.get(Cart, "v1").items() == []  # the next call starts it fresh


async def test_hibernated_objects_expire_after_a_restart_each_deleted_once(
    sql_backend: Backend,
) -> None:
    async with _rt(sql_backend, Clock(-2 * HOUR)) as old:  # visitors of two hours ago
        for i in range(20):
            await old.get(Cart, f"old{i}").add("x")
    async with _rt(sql_backend) as recent:
        await recent.get(Cart, "recent").add("y")
        assert all([await _expiry(recent.storage, f"old{i}") for i in range(20)])
    # A restart: two nodes, neither ever held these objects, find the due ones in storage.
    async with _rt(sql_backend, None, node_id="a") as a, _rt(sql_backend, None, node_id="b") as b:
        await wait_until(lambda: a.stats().expired + b.stats().expired >= 20, within=20,
                         what="every old cart to expire")
        page = await a.storage.query(ObjectQuery(type="cart", limit=100))
        assert [cp.key for cp in page.items] == ["recent"]
        assert a.stats().expired + b.stats().expired == 20  # each deleted once, no fight
        assert await b.get(Cart, "recent").items() == ["y"]


async def test_after_a_crash_its_last_commit_counts_as_a_use(sql_backend: Backend) -> None:
    crashed = _rt(sql_backend, Clock(-2 * HOUR))
    async with crashed:
        cart = crashed.get(Cart, "c")
        await cart.add("a")  # its expiry is written with this first commit: due an hour ago
        await cart.add("b")  # committed now (by the database's time)
        crashed._host.lease_lost()  # the node dies: no hibernation, nothing more written
    storage = open_storage(sql_backend.url, schema=sql_backend.schema)
    try:
        expiry = await _expiry(storage, "c")
        assert expiry is not None and expiry.due_at < datetime.now(UTC) - HOUR / 2  # overdue
        async with _rt(sql_backend) as rt:  # delivered: the last commit was its last use
            for _ in range(500):
                moved = await _expiry(storage, "c")
                if moved is not None and moved.due_at > datetime.now(UTC) + HOUR / 2:
                    break
                await _sleep(0.02)
            else:
                pytest.fail("the expiry was not moved")
            assert await rt.get(Cart, "c").items() == ["a", "b"] and rt.stats().expired == 0
    finally:
        await storage.close()


async def test_an_expiry_its_class_dropped_is_no_longer_delivered(sql_backend: Backend) -> None:
    class Kept(Cart):
        type_name = "cart"
        expire_after = None  # a later deploy keeps carts for good

    async with _rt(sql_backend, Clock(-2 * HOUR)) as old:
        await old.get(Cart, "k").add("x")
    async with _rt(sql_backend, None, Kept) as rt:
        for _ in range(500):
            expiry = await _expiry(rt.storage, "k")
            if expiry is not None and expiry.status == "failed":
                break
            await _sleep(0.02)
        else:
            pytest.fail(f"the expiry is still delivered: {expiry}")
        assert rt.stats().thaws == 0  # the object was not even woken for it
        assert await rt.get(Kept, "k").items() == ["x"]


async def test_a_live_object_expires_unless_a_client_is_attached(backend: Backend) -> None:
    class Brief(Cart):
        type_name = "brief"
        expire_after = timedelta(seconds=0.1)
        idle_timeout = 60.0  # it would stay in memory: only its expiry removes it

    async with _rt(backend, None, Brief) as rt:
        await rt.get(Brief, "k").add("x")
        await wait_until(lambda: rt.stats().expired == 1, what="the expiry")
        assert await rt.storage.load("brief", "k") is None and rt.stats().hibernations == 0
        await rt.get(Brief, "k").add("y")
        conn: Connection = await rt.gateway.attach(Brief, "k", Recorder())
        await _sleep(0.4)  # four times expire_after, attached: kept
        assert await rt.get(Brief, "k").items() == ["y"] and rt.stats().expired == 1
        await rt.gateway.detach(conn)
        await wait_until(lambda: rt.stats().expired == 2, what="the expiry after the detach")
        assert await rt.storage.load("brief", "k") is None


async def test_the_expiry_is_the_runtimes_own_alarm(backend: Backend) -> None:
    async with _rt(backend) as rt:
        cart = rt.get(Cart, "k")
        await cart.add("x")
        assert await cart.alarm_names() == ["abandoned"]  # the expiry is not the object's
        assert {a.name for a in await rt.storage.load_alarms("cart", "k")} == {
            "abandoned", EXPIRE,
        }
        with pytest.raises(ValueError, match="'objects:' are the runtime's"):
            await cart.misuse(EXPIRE)


def test_expire_after_is_checked_at_class_definition() -> None:
    def define(after: object) -> type[DurableObject[CartState]]:
        class Session(DurableObject[CartState]):
            expire_after = after  # type: ignore[assignment]

        return Session

    for bad in (timedelta(0), -5, "1h", True, float("inf")):
        with pytest.raises(TypeError, match="expire_after must be a timedelta"):
            define(bad)
    assert define(90).expire_after == timedelta(seconds=90)
    assert define(None).expire_after is None
