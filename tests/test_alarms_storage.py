"""The alarm storage contract (issue 10, first step) on memory, SQLite and PostgreSQL.

Alarm writes ride a commit and apply only if the commit does; due alarms are taken by one
claimer at a time; a failed delivery's retry state is kept only for the occurrence it names.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from pydantic_core import to_json

from fastapi_objects.storage import Alarm, AlarmWrite, Commit, Storage

NOW = datetime.now(UTC).replace(microsecond=0)


def _alarm(key: str, name: str, due: datetime, **kw: object) -> Alarm:
    return Alarm(type="counter", key=key, name=name, due_at=due, scheduled_at=due, **kw)  # type: ignore[arg-type]


def _commit(key: str, rev: int, *writes: AlarmWrite) -> Commit:
    return Commit(
        type="counter", key=key, expected_rev=rev, new_rev=rev + 1, state=to_json({"value": rev}),
        state_version=1, snapshot_rev=0, journal_rev=0, alarms=list(writes),
    )


async def test_alarm_writes_ride_the_commit(storage: Storage) -> None:
    past = NOW - timedelta(seconds=5)
    set_a = AlarmWrite("a", _alarm("k", "a", past, payload={"n": 1}, every=60.0))
    set_b = AlarmWrite("b", _alarm("k", "b", NOW + timedelta(hours=1)))
    assert await storage.commit([_commit("k", 0, set_a, set_b)]) == [True]
    alarms = await storage.load_alarms("counter", "k")
    assert [a.name for a in alarms] == ["a", "b"]
    assert alarms[0].payload == {"n": 1} and alarms[0].every == 60.0
    assert alarms[0].due_at == past and alarms[0].status == "pending"
    # A fenced-out commit writes none of its alarms.
    lost = AlarmWrite("c", _alarm("k", "c", past))
    assert await storage.commit([_commit("k", 0, lost, AlarmWrite("a", None))]) == [False]
    assert [a.name for a in await storage.load_alarms("counter", "k")] == ["a", "b"]
    # Replace one, delete the other, in one commit with the state.
    moved = AlarmWrite("a", _alarm("k", "a", NOW + timedelta(minutes=1)))
    assert await storage.commit([_commit("k", 1, moved, AlarmWrite("b", None))]) == [True]
    (only,) = await storage.load_alarms("counter", "k")
    assert only.name == "a" and only.due_at == NOW + timedelta(minutes=1)


async def test_the_alarms_of_many_objects_in_one_read(storage: Storage) -> None:
    """What a thaw batch reads: each object's alarms by name; objects without any left out."""
    later = NOW + timedelta(hours=1)
    await storage.commit([
        _commit("k1", 0, AlarmWrite("b", _alarm("k1", "b", later)),
                AlarmWrite("a", _alarm("k1", "a", later))),
        _commit("k2", 0, AlarmWrite("z", _alarm("k2", "z", later))),
        _commit("k3", 0),
    ])
    found = await storage.load_alarms_many([("counter", k) for k in ("k1", "k2", "k3", "k4")])
    assert {ident: [a.name for a in alarms] for ident, alarms in found.items()} == {
        ("counter", "k1"): ["a", "b"], ("counter", "k2"): ["z"],
    }
    assert await storage.load_alarms_many([]) == {}


async def test_due_alarms_are_taken_once_until_their_lease_ends(storage: Storage) -> None:
    past = NOW - timedelta(seconds=1)
    writes = [AlarmWrite(f"n{i}", _alarm("k", f"n{i}", past)) for i in range(5)]
    later = AlarmWrite("later", _alarm("k", "later", NOW + timedelta(hours=1)))
    await storage.commit([_commit("k", 0, *writes, later)])
    taken = await asyncio.gather(*(storage.claim_due_alarms(10, 30.0) for _ in range(4)))
    names = sorted(a.name for batch in taken for a in batch)
    assert names == [f"n{i}" for i in range(5)]  # each due alarm once, the later one not yet
    assert await storage.claim_due_alarms(10, 30.0) == []



async def test_alarms_are_taken_ahead_of_their_due_time(storage: Storage) -> None:
    """With ``ahead``, alarms due within that many seconds are taken (to be delivered on
    time), later ones not; the lease runs from the end of that window."""
    now = datetime.now(UTC)
    soon = AlarmWrite("soon", _alarm("k", "soon", now + timedelta(seconds=0.5)))
    later = AlarmWrite("later", _alarm("k", "later", now + timedelta(seconds=30)))
    await storage.commit([_commit("k", 0, soon, later)])
    assert await storage.claim_due_alarms(10, 0.1) == []  # nothing due yet
    (taken,) = await storage.claim_due_alarms(10, 0.1, ahead=1.0)
    assert taken.name == "soon"
    await asyncio.sleep(0.3)  # past the lease alone, within ahead + lease
    assert await storage.claim_due_alarms(10, 0.1, ahead=1.0) == []


async def test_a_failure_is_recorded_for_its_occurrence_only(storage: Storage) -> None:
    past = NOW - timedelta(seconds=1)
    await storage.commit([_commit("k", 0, AlarmWrite("a", _alarm("k", "a", past)))])
    (taken,) = await storage.claim_due_alarms(10, 0.2)
    retry = Alarm(**{**{f: getattr(taken, f) for f in taken.__slots__},  # type: ignore[arg-type]
                     "due_at": NOW - timedelta(seconds=1), "retry_count": 1,
                     "last_error": "boom"})
    assert await storage.record_alarm_failure(retry)
    (again,) = await storage.claim_due_alarms(10, 30.0)  # freed for the next delivery at once
    assert (again.retry_count, again.last_error) == (1, "boom")
    # A delivery of an occurrence that is no longer stored records nothing.
    newer = AlarmWrite("a", _alarm("k", "a", NOW + timedelta(hours=1)))
    await storage.commit([_commit("k", 1, newer)])
    assert not await storage.record_alarm_failure(retry)
    (stored,) = await storage.load_alarms("counter", "k")
    assert stored.retry_count == 0 and stored.due_at == NOW + timedelta(hours=1)
