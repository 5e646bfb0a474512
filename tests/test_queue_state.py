"""A queue's state (runtime/queues/state.py) and the persistent map it is made of (_pmap.py).

``apply`` must be pure: the runtime goes back to the old state object when a turn raises, so
every event must leave it exactly as it was. The stored JSON of a queue must not change (old
snapshots still load). The index must pick what a full scan of the jobs would.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic_core import to_json

from fastapi_objects.runtime.queues._pmap import PMap
from fastapi_objects.runtime.queues.state import Job, JobIndex, QueueEvent, QueueState, apply_event

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_pmap_is_a_mapping_whose_changes_leave_the_original_intact() -> None:
    base = PMap({f"k{i}": i for i in range(1000)})
    grown = base.set("new", -1).set("k5", 55)
    shrunk = grown.delete("k7").delete("absent")
    assert len(base) == 1000 and "new" not in base and base["k5"] == 5 and base["k7"] == 7
    assert len(grown) == 1001 and grown["new"] == -1 and grown["k5"] == 55
    assert len(shrunk) == 1000 and "k7" not in shrunk and shrunk.get("k7") is None
    assert shrunk.get("k7", "default") == "default"
    assert shrunk.delete("absent") is shrunk
    assert dict(shrunk) == {**{f"k{i}": i for i in range(1000) if i != 7}, "new": -1, "k5": 55}
    assert shrunk == shrunk.to_dict() and base != grown
    assert sorted(shrunk) == sorted(shrunk.to_dict())
    with pytest.raises(KeyError):
        shrunk["k7"]
    emptied = PMap({"a": 1}).delete("a")
    assert len(emptied) == 0 and emptied == {} and list(emptied.items()) == []


def _job(n: int, **fields: object) -> Job:
    return Job(id=f"{n:x}-00", payload={"n": n}, visible_at=T0 + timedelta(seconds=n),
               **fields)


def test_the_stored_json_of_a_queue_is_what_it_always_was() -> None:
    # A snapshot as the first release wrote it (jobs and keys were plain dicts).
    stored = {
        "jobs": {"1-ab": {"id": "1-ab", "payload": {"to": "ann"}, "key": "welcome:ann",
                          "attempts": 1, "max_attempts": 5, "visible_at": "2026-01-01T00:00:00Z",
                          "status": "claimed", "claim_id": "w/1", "token_hash": "h",
                          "lease_until": "2026-01-01T00:00:30Z", "last_error": None}},
        "keys": {"welcome:ann": "1-ab"}, "seq": 1, "completed": 4,
    }
    state = QueueState.model_validate(stored)
    assert isinstance(state.jobs, PMap) and state.jobs["1-ab"].lease_until == T0 + timedelta(
        seconds=30)
    assert state.model_dump(mode="json") == stored
    assert QueueState.model_validate_json(to_json(state)) == state
    assert QueueState().model_dump(mode="json") == {"jobs": {}, "keys": {}, "seq": 0,
                                                    "completed": 0}


EVENTS = [
    QueueEvent(kind="enqueued", id="9-00", job=_job(9, key="k9")),
    QueueEvent(kind="claimed", id="1-00", claim_id="w/1", token_hash="h", at=T0),
    QueueEvent(kind="extended", id="2-00", at=T0 + timedelta(seconds=60)),
    QueueEvent(kind="completed", id="3-00"),
    QueueEvent(kind="failed", id="2-00", at=T0, error="boom"),
    QueueEvent(kind="retried", id="4-00", at=T0),
    QueueEvent(kind="completed", id="absent"),
]


@pytest.mark.parametrize("event", EVENTS, ids=[f"{e.kind}:{e.id}" for e in EVENTS])
def test_apply_leaves_the_old_state_exactly_as_it_was(event: QueueEvent) -> None:
    jobs = [_job(1), _job(2, status="claimed", token_hash="h", lease_until=T0, attempts=1),
            _job(3, key="k3", status="claimed"), _job(4, status="dead", attempts=5)]
    old = QueueState(jobs=PMap({j.id: j for j in jobs}), keys=PMap({"k3": "3-00"}), seq=4)
    before = old.model_dump(mode="json")
    new = apply_event(old, event)
    assert old.model_dump(mode="json") == before
    if event.id != "absent":
        assert new != old


def test_completing_a_job_frees_its_key_and_counts_it() -> None:
    state = apply_event(QueueState(), QueueEvent(kind="enqueued", id="1-00",
                                                 job=_job(1, key="once")))
    assert dict(state.keys) == {"once": "1-00"} and state.seq == 1
    state = apply_event(state, QueueEvent(kind="completed", id="1-00"))
    assert dict(state.keys) == {} and len(state.jobs) == 0 and state.completed == 1


def _scan(state: QueueState, now: datetime) -> set[str]:
    """What the first release's claim considered: every job, looked at one by one."""
    return {
        j.id for j in state.jobs.values()
        if (j.status == "ready" and j.visible_at <= now)
        or (j.status == "claimed" and j.lease_until is not None and j.lease_until < now)
    }


def test_the_index_takes_run_out_leases_first_then_the_oldest_visible_job() -> None:
    now = T0 + timedelta(seconds=100)
    jobs = [
        _job(50),  # visible, the oldest ready one
        _job(10, status="claimed", lease_until=now - timedelta(seconds=1)),  # lease ran out
        _job(20, status="claimed", lease_until=now + timedelta(seconds=5)),  # still held
        _job(30, status="dead"),
        _job(60),
        _job(500),  # not visible yet
    ]
    state = QueueState(jobs=PMap({j.id: j for j in jobs}))
    index = JobIndex(state)
    assert index.counts == {"ready": 3, "claimed": 2, "dead": 1}
    taken = []
    while (job := index.next_due(now)) is not None:
        assert job.id in _scan(index.state, now)
        taken.append(job.id)
        claimed = apply_event(index.state, QueueEvent(
            kind="claimed", id=job.id, at=now + timedelta(seconds=30)))
        index.changed(job, claimed.jobs[job.id], claimed)
    assert taken == ["a-00", "32-00", "3c-00"]  # 10, 50, 60 in hex
    assert _scan(index.state, now) == set()
    assert index.counts == {"ready": 1, "claimed": 4, "dead": 1}
    later = now + timedelta(seconds=1000)
    assert index.next_due(later) is not None and index.next_due(later).id in _scan(  # type: ignore[union-attr]
        index.state, later)
