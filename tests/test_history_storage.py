"""The storage contract for kept states (history, storage version 5): memory, SQLite, PostgreSQL.

Part of the storage contract suite (``test_storage.py``, whose helpers it uses), in a file of
its own as the alarms' part is.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi_objects.storage import Commit, KeptState, Storage
from tests.test_storage import _create, _load, _next


def _kept(commit: Commit) -> Commit:
    return dataclasses.replace(commit, history=True)


async def _revisions(storage: Storage, key: str, values: list[Any], type: str = "counter") -> None:
    """Commit ``values`` as the object's states, one commit each, every state kept."""
    await storage.commit([_kept(_create(key, {"value": values[0]}, type=type))])
    for value in values[1:]:
        await asyncio.sleep(0.002)  # distinct commit times, even on a coarse clock
        cp = await _load(storage, key, type)
        assert await storage.commit([_kept(_next(cp, {"value": value}))]) == [True]


async def test_each_committed_state_is_kept_newest_first(storage: Storage) -> None:
    await _revisions(storage, "a", [10, 11, 12])
    listed = await storage.history("counter", "a")
    assert [(k.rev, k.state_version, k.state) for k in listed] == [
        (3, 1, None), (2, 1, None), (1, 1, None)  # listings leave the states out
    ]
    assert listed[0].at >= listed[1].at >= listed[2].at
    assert listed[0].at.tzinfo is not None
    assert [k.rev for k in await storage.history("counter", "a", before_rev=3)] == [2, 1]
    assert [k.rev for k in await storage.history("counter", "a", limit=1)] == [3]
    kept = await storage.kept_state("counter", "a", rev=2)
    assert kept is not None and (kept.rev, kept.state) == (2, {"value": 11})


async def test_a_kept_state_is_found_at_or_before_a_rev_or_a_time(storage: Storage) -> None:
    await _revisions(storage, "a", [10, 11])
    cp = await _load(storage, "a")
    # A journal-only commit (rev 3) keeps no state: the state at rev 3 is rev 2's.
    assert await storage.commit([_kept(_next(cp, None, [("note", 1)]))]) == [True]
    assert [k.rev for k in await storage.history("counter", "a")] == [2, 1]
    at_rev_3 = await storage.kept_state("counter", "a", rev=3)
    assert at_rev_3 is not None and (at_rev_3.rev, at_rev_3.state) == (2, {"value": 11})
    assert await storage.kept_state("counter", "a", rev=0) is None
    latest = await storage.kept_state("counter", "a")
    assert latest is not None and latest.rev == 2

    first, second = sorted(await storage.history("counter", "a"), key=lambda k: k.rev)
    by_time = await storage.kept_state("counter", "a", at=first.at)
    assert by_time is not None and (by_time.rev, by_time.state) == (1, {"value": 10})
    later = await storage.kept_state("counter", "a", at=second.at + timedelta(hours=1))
    assert later is not None and later.rev == 2
    # An aware time in another zone is the same instant.
    east = first.at.astimezone(datetime.now().astimezone().tzinfo)
    in_zone = await storage.kept_state("counter", "a", at=east)
    assert in_zone is not None and in_zone.rev == 1
    assert await storage.kept_state("counter", "a", at=first.at - timedelta(seconds=1)) is None
    both = await storage.kept_state("counter", "a", rev=1, at=second.at)
    assert both is not None and both.rev == 1


async def test_nothing_is_kept_without_the_option_or_for_a_refused_commit(
    storage: Storage,
) -> None:
    await storage.commit([_create("plain", {"value": 1})])
    cp = await _load(storage, "plain")
    await storage.commit([_next(cp, {"value": 2})])
    assert await storage.history("counter", "plain") == []
    assert await storage.kept_state("counter", "plain") is None

    await _revisions(storage, "kept", [1])
    cp = await _load(storage, "kept")
    stale = _kept(_next(cp, {"value": 99}, expected_rev=cp.rev + 7))
    assert await storage.commit([stale]) == [False]
    assert [k.rev for k in await storage.history("counter", "kept")] == [1]


async def test_kept_states_ride_a_batch_with_alarms_and_other_objects(storage: Storage) -> None:
    from fastapi_objects.storage import Alarm, AlarmWrite

    now = datetime.now(UTC)
    alarm = Alarm("counter", "b", "tick", now, now)
    batch = [
        _kept(_create("a", {"value": 1})),
        dataclasses.replace(_create("b", {"value": 2}), alarms=[AlarmWrite("tick", alarm)]),
        _kept(_create("c", {"value": 3}, type="other")),
    ]
    assert await storage.commit(batch) == [True, True, True]
    assert [k.rev for k in await storage.history("counter", "a")] == [1]
    assert await storage.history("counter", "b") == []
    assert [k.rev for k in await storage.history("other", "c")] == [1]
    assert [a.name for a in await storage.load_alarms("counter", "b")] == ["tick"]


async def test_pruning_keeps_the_state_in_force_at_the_cutoff(storage: Storage) -> None:
    await _revisions(storage, "a", [1, 2, 3, 4])
    await _revisions(storage, "solo", [7])
    await _revisions(storage, "x", [1, 2], type="other")
    revs = sorted(await storage.history("counter", "a"), key=lambda k: k.rev)
    cutoff = revs[2].at  # revs 1 and 2 are older; rev 2 is what the object held then
    assert await storage.prune_history("counter", cutoff, 100) == 1
    assert [k.rev for k in await storage.history("counter", "a")] == [4, 3, 2]
    at_cutoff = await storage.kept_state("counter", "a", at=cutoff - timedelta(microseconds=1))
    assert at_cutoff is not None and at_cutoff.state == {"value": 2}
    assert await storage.prune_history("counter", cutoff, 100) == 0  # nothing more to do
    # Much later: each object keeps its newest state, whatever its age; other types untouched.
    future = datetime.now(UTC) + timedelta(days=1)
    assert await storage.prune_history("counter", future, 100) == 2
    assert [k.rev for k in await storage.history("counter", "a")] == [4]
    assert [k.rev for k in await storage.history("counter", "solo")] == [1]
    assert [k.rev for k in await storage.history("other", "x")] == [2, 1]


async def test_pruning_goes_in_batches(storage: Storage) -> None:
    for key in ("a", "b", "c"):
        await _revisions(storage, key, [1, 2, 3])  # two superseded states each
    future = datetime.now(UTC) + timedelta(days=1)
    done = [await storage.prune_history("counter", future, 4) for _ in range(3)]
    assert done == [4, 2, 0]
    for key in ("a", "b", "c"):
        assert [k.rev for k in await storage.history("counter", key)] == [3]


async def test_deleting_an_object_drops_its_history(storage: Storage) -> None:
    await _revisions(storage, "a", [1, 2])
    assert await storage.delete("counter", "a")
    assert await storage.history("counter", "a") == []
    await _revisions(storage, "a", [5])  # made again: its revs start over, nothing collides
    kept = await storage.kept_state("counter", "a")
    assert kept == KeptState(1, kept.at, 1, {"value": 5}) if kept else False


async def test_the_clock_is_aware_and_now(storage: Storage) -> None:
    before = datetime.now(UTC) - timedelta(seconds=30)
    now = await storage.clock()
    assert now.tzinfo is not None
    assert before < now < datetime.now(UTC) + timedelta(seconds=30)
