"""Event-sourced objects: emit + pure apply, rebuilt from snapshot + journal, snapshots every N."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pytest
from _support import wait_until
from pydantic import BaseModel
from pydantic_core import to_json

from fastapi_objects._exceptions import CorruptState
from fastapi_objects.runtime import EventSourced, Runtime, readonly
from fastapi_objects.storage import Checkpoint, Commit, Storage

if TYPE_CHECKING:
    from conftest import Backend


class Balance(BaseModel):
    total: int = 0
    history: list[int] = []


class Deposited(BaseModel):
    kind: Literal["deposited"] = "deposited"
    amount: int


class Account(EventSourced[Balance, Deposited]):
    snapshot_every = 3
    applied: ClassVar[list[int]] = []

    @staticmethod
    def apply(state: Balance, event: Deposited) -> Balance:
        Account.applied.append(event.amount)
        return Balance(total=state.total + event.amount, history=[*state.history, event.amount])

    async def deposit(self, amount: int) -> int:
        self.emit(Deposited(amount=amount))
        return self.state.total

    async def deposit_twice(self, amount: int) -> int:
        self.emit(Deposited(amount=amount))
        self.emit(Deposited(amount=amount))
        return self.state.total

    async def deposit_then_fail(self, amount: int) -> int:
        self.emit(Deposited(amount=amount))
        raise ValueError("refused")

    async def nothing(self) -> int:
        return self.state.total

    @readonly
    async def balance(self) -> dict[str, Any]:
        return self.state.model_dump()


class Sleeper(Account):
    """An account that hibernates quickly."""

    idle_timeout = 0.05
    snapshot_every = 100


@pytest.fixture
async def rt(backend: Backend) -> AsyncIterator[Runtime]:
    Account.applied.clear()
    async with Runtime(
        objects=[Account, Sleeper], database_url=backend.url, schema=backend.schema,
        create_tables=True,
    ) as runtime:
        yield runtime


async def _stored(storage: Storage, key: str, type: str = "account") -> Checkpoint:
    cp = await storage.load(type, key)
    assert cp is not None
    return cp


async def test_emit_applies_now_and_journals_events(rt: Runtime) -> None:
    acct = rt.get(Account, "a")
    assert await acct.deposit(10) == 10
    assert await acct.deposit_twice(5) == 20
    assert await acct.balance() == {"total": 20, "history": [10, 5, 5]}
    journal = await rt.journal(Account, "a")
    assert [(e.rev, e.kind, e.payload) for e in journal] == [
        (1, "event", {"kind": "deposited", "amount": 10}),
        (2, "event", {"kind": "deposited", "amount": 5}),
        (3, "event", {"kind": "deposited", "amount": 5}),
    ]


async def test_snapshot_every_n_events(rt: Runtime) -> None:
    acct = rt.get(Account, "a")
    seen: list[tuple[int, int, int]] = []
    for n in range(1, 9):
        await acct.deposit(n)
        cp = await _stored(rt.storage, "a")
        seen.append((cp.journal_rev, cp.snapshot_rev, cp.state["total"]))
        # The stored state is exactly the state after the snapshot_rev-th event.
        assert cp.state["total"] == sum(range(1, cp.snapshot_rev + 1))
        assert cp.journal_rev - cp.snapshot_rev < Account.snapshot_every
        assert cp.rev == n
    # The first commit creates the row with a snapshot; then one every 3 events.
    assert seen == [
        (1, 1, 1), (2, 1, 1), (3, 1, 1), (4, 4, 10), (5, 4, 10), (6, 4, 10), (7, 7, 28),
        (8, 7, 28),
    ]


async def test_thaw_replays_the_journal_after_the_snapshot(rt: Runtime) -> None:
    """A snapshot at journal rev 1 plus two later events: thaw applies exactly those two."""
    events = [("event", to_json({"amount": a})) for a in (10, 5, 7)]
    seed = Commit(
        type="account", key="s", expected_rev=0, new_rev=1,
        state=to_json({"total": 10, "history": [10]}),
        state_version=1, snapshot_rev=1, journal_rev=3, entries=events,
    )
    assert await rt.storage.commit([seed]) == [True]
    assert await rt.get(Account, "s").balance() == {"total": 22, "history": [10, 5, 7]}
    assert Account.applied == [5, 7]
    # Later events continue the journal contiguously.
    assert await rt.get(Account, "s").deposit(1) == 23
    assert [e.rev for e in await rt.journal(Account, "s")] == [1, 2, 3, 4]


async def test_thaw_after_hibernation_keeps_state(rt: Runtime) -> None:
    acct = rt.get(Sleeper, "h")
    for amount in (1, 2, 3):
        await acct.deposit(amount)
    cp = await _stored(rt.storage, "h", "sleeper")
    assert (cp.journal_rev, cp.snapshot_rev) == (3, 1)  # snapshot_every=100: only the first
    await wait_until(lambda: rt.stats().hibernations == 1, what="hibernation")
    cp = await _stored(rt.storage, "h", "sleeper")
    assert cp.status == "hibernated"
    assert (cp.snapshot_rev, cp.state["total"]) == (3, 6)  # hibernation wrote a snapshot
    assert await acct.balance() == {"total": 6, "history": [1, 2, 3]}
    assert await acct.deposit(4) == 10


async def test_second_runtime_rebuilds_from_snapshot_and_journal(sql_backend: Backend) -> None:
    kw: dict[str, Any] = {"database_url": sql_backend.url, "schema": sql_backend.schema,
                          "create_tables": True}
    async with Runtime(objects=[Account], **kw) as first:
        for amount in (1, 2, 3, 4, 5):
            await first.get(Account, "x").deposit(amount)
        cp = await _stored(first.storage, "x")
        assert (cp.snapshot_rev, cp.journal_rev) == (4, 5)
        Account.applied.clear()
        # As if the first node had died without hibernating: its objects are free to take, and
        # a second node rebuilds the state from the snapshot and the journal.
        await first.storage.deregister_node(first.node_id)
        async with Runtime(objects=[Account], **kw) as second:
            assert await second.get(Account, "x").balance() == {
                "total": 15, "history": [1, 2, 3, 4, 5]
            }
            assert Account.applied == [5]  # only the event after the snapshot was replayed


async def test_failed_turn_drops_its_events(rt: Runtime) -> None:
    acct = rt.get(Account, "a")
    await acct.deposit(10)
    commits = rt.stats().commits
    with pytest.raises(ValueError, match="refused"):
        await acct.deposit_then_fail(99)
    assert await acct.balance() == {"total": 10, "history": [10]}
    assert [e.payload["amount"] for e in await rt.journal(Account, "a")] == [10]
    assert rt.stats().commits == commits
    assert await acct.nothing() == 10  # a turn without events writes nothing
    assert rt.stats().commits == commits
    assert await acct.deposit(1) == 11
    assert [e.rev for e in await rt.journal(Account, "a")] == [1, 2]


async def test_concurrent_emits_commit_in_order(rt: Runtime) -> None:
    acct = rt.get(Account, "c")
    await acct.balance()  # thaw first (see test_the_call_that_thaws_keeps_its_place)
    results = await asyncio.gather(*(acct.deposit(n) for n in range(1, 31)))
    assert results == [sum(range(1, n + 1)) for n in range(1, 31)]
    journal = await rt.journal(Account, "c")
    assert [e.payload["amount"] for e in journal] == list(range(1, 31))
    assert [e.rev for e in journal] == list(range(1, 31))
    cp = await _stored(rt.storage, "c")
    assert cp.journal_rev == 30
    assert cp.state["total"] == sum(range(1, cp.snapshot_rev + 1))


async def test_invalid_event_in_the_journal_is_corrupt_state(rt: Runtime) -> None:
    seed = Commit(
        type="account", key="bad", expected_rev=0, new_rev=1, state=to_json({"total": 1}),
        state_version=1, snapshot_rev=1, journal_rev=2,
        entries=[("event", to_json({"amount": 1})), ("event", to_json({"amount": "lots"}))],
    )
    assert await rt.storage.commit([seed]) == [True]
    with pytest.raises(CorruptState, match=r"account:bad.*rev 2"):
        await rt.get(Account, "bad").balance()
