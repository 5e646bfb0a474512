"""Hypothesis drives a queue through random interleavings of its calls; a model says what each
must answer.

One real queue per example (a ``Runtime`` on memory://, calls through the handle), with the
queue's clock under the test's control so that leases run out and backoffs end without
sleeping. Steps: enqueue (with or without a key, delayed or not), a poisoned enqueue that
storage refuses (the turn rolls back), ``claim_many``, ``heartbeat_many`` and
``complete_many`` with the right tokens or forged ones, ``fail``, ``retry`` and time passing.

After every step ``stats()`` and the pending job ids must be the model's; a claim must take
exactly the jobs the model says are due, in order. At the end the journal, replayed from
nothing through ``apply``, must give the same jobs, and hold exactly one completion record for
each job the model completed: each job completes once, a stale or forged token completes
nothing, and a key names one pending job.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastapi_objects import Runtime, UnstorableValue
from fastapi_objects.runtime.queues import ObjectsQueue, QueueEvent, QueueState
from fastapi_objects.runtime.queues import queue as queue_module

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BACKOFF = ObjectsQueue.backoff


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Job:
    """The model of one pending job."""

    id: str
    key: str | None
    max_attempts: int
    visible: datetime
    attempts: int = 0
    status: str = "ready"
    token: str | None = None
    lease: datetime | None = None


class Model:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.keys: dict[str, str] = {}
        self.ids: list[str] = []  # every job ever enqueued
        self.claims: list[tuple[str, str]] = []  # every claim: (job id, token)
        self.completed: list[str] = []

    def due(self, now: datetime) -> list[str]:
        """The ids a claim takes, in order: leases run out first, then the oldest visible."""
        expired = sorted((j.lease, j.id) for j in self.jobs.values()
                         if j.status == "claimed" and j.lease is not None and j.lease < now)
        ready = sorted((j.visible, len(j.id), j.id) for j in self.jobs.values()
                       if j.status == "ready" and j.visible <= now)
        return [job_id for *_, job_id in expired] + [job_id for *_, job_id in ready]

    def held(self, job_id: str, token: str) -> Job | None:
        job = self.jobs.get(job_id)
        return job if job is not None and job.status == "claimed" and job.token == token else None

    def stats(self) -> dict[str, int]:
        counts = Counter(j.status for j in self.jobs.values())
        return {"ready": counts["ready"], "claimed": counts["claimed"], "dead": counts["dead"],
                "completed": len(self.completed)}


_pick = st.integers(min_value=0, max_value=60)
_steps = st.lists(st.one_of(
    st.tuples(st.just("enqueue"), st.sampled_from([None, "a", "b", "c"]),
              st.sampled_from([0.0, 5.0]), st.integers(min_value=1, max_value=3)),
    st.tuples(st.just("poison"), st.sampled_from([None, "a", "d"])),
    st.tuples(st.just("claim"), st.integers(min_value=1, max_value=3),
              st.sampled_from([10.0, 60.0])),
    st.tuples(st.just("heartbeat"), st.lists(st.tuples(_pick, st.booleans()), min_size=1,
                                             max_size=3)),
    st.tuples(st.just("complete"), st.lists(st.tuples(_pick, st.booleans()), min_size=1,
                                            max_size=3)),
    st.tuples(st.just("fail"), _pick),
    st.tuples(st.just("retry"), _pick),
    st.tuples(st.just("wait"), st.sampled_from([1.0, 15.0, 100.0])),
), min_size=10, max_size=60)


@pytest.fixture
async def runtime(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Runtime, Clock]]:
    clock = Clock()
    monkeypatch.setattr(queue_module, "_now", clock)
    async with Runtime(database_url="memory://") as rt:
        yield rt, clock


def _tokens(model: Model, picks: list[tuple[int, bool]]) -> list[tuple[str, str]]:
    """Claims the model made, by index, with their own token or a forged one."""
    return [(model.claims[i % len(model.claims)][0],
             model.claims[i % len(model.claims)][1] if own else "forged") for i, own in picks]


async def _step(q: Any, model: Model, clock: Clock, step: tuple[Any, ...]) -> None:
    kind, now = step[0], clock.now
    if kind == "enqueue":
        _, key, delay, max_attempts = step
        job_id = await q.enqueue({"n": len(model.ids)}, key=key, delay=delay,
                                 max_attempts=max_attempts)
        if key is not None and key in model.keys:
            assert job_id == model.keys[key]  # de-duplicated: the pending job's id
            return
        assert job_id not in model.ids
        model.ids.append(job_id)
        model.jobs[job_id] = Job(job_id, key, max_attempts, now + timedelta(seconds=delay))
        if key is not None:
            model.keys[key] = job_id
    elif kind == "poison":  # a payload storage refuses: the turn rolls back
        key = step[1]
        if key is not None and key in model.keys:
            assert await q.enqueue("nul \x00", key=key) == model.keys[key]  # nothing to store
            return
        with pytest.raises(UnstorableValue):
            await q.enqueue("nul \x00", key=key)
    elif kind == "claim":
        _, limit, lease = step
        expected = model.due(now)[:limit]
        claimed = await q.claim_many("w", lease, limit)
        assert [c.id for c in claimed] == expected
        for c in claimed:
            job = model.jobs[c.id]
            job.attempts += 1
            job.status, job.token, job.lease = "claimed", c.token, now + timedelta(seconds=lease)
            assert c.attempt == job.attempts
            model.claims.append((c.id, c.token))
    elif kind in ("heartbeat", "complete") and model.claims:
        pairs = _tokens(model, step[1])
        expected = []
        for job_id, token in pairs:
            job = model.held(job_id, token)
            expected.append(job is not None)
            if job is not None and kind == "heartbeat":
                job.lease = now + timedelta(seconds=30)
            elif job is not None:
                del model.jobs[job_id]
                if job.key is not None:
                    del model.keys[job.key]
                model.completed.append(job_id)
        call = q.heartbeat_many(pairs, 30.0) if kind == "heartbeat" else q.complete_many(pairs)
        assert await call == expected
    elif kind == "fail" and model.claims:
        job_id, token = model.claims[step[1] % len(model.claims)]
        job = model.held(job_id, token)
        status = await q.fail(job_id, token, "boom")
        if job is None:
            assert status is None
            return
        job.status = "dead" if job.attempts >= job.max_attempts else "ready"
        job.visible = now + timedelta(seconds=BACKOFF * 2 ** (job.attempts - 1))
        job.token = job.lease = None
        assert status == job.status
    elif kind == "retry" and model.ids:
        job_id = model.ids[step[1] % len(model.ids)]
        job = model.jobs.get(job_id)
        revived = job is not None and job.status == "dead"
        assert await q.retry(job_id) == revived
        if job is not None and revived:
            job.status, job.attempts, job.visible = "ready", 0, now
    elif kind == "wait":
        clock.now = now + timedelta(seconds=step[1])


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_steps)
async def test_each_job_completes_once_whatever_the_interleaving(
    runtime: tuple[Runtime, Clock], steps: list[tuple[Any, ...]]
) -> None:
    rt, clock = runtime
    clock.now = T0
    name = f"q{uuid.uuid4().hex[:8]}"
    q = rt.queue(name)
    model = Model()
    for step in steps:
        await _step(q, model, clock, step)
        assert await q.stats() == model.stats()
        pending = await q.jobs() + await q.jobs(dead=True)
        assert sorted(j["id"] for j in pending) == sorted(model.jobs)
    replayed = QueueState()
    completions: Counter[str] = Counter()
    for entry in await rt.journal(ObjectsQueue, name):
        event = QueueEvent.model_validate(entry.payload)
        replayed = ObjectsQueue.apply(replayed, event)
        completions[event.id] += event.kind == "completed"
    assert {job_id: job.status for job_id, job in replayed.jobs.items()} == {
        job_id: job.status for job_id, job in model.jobs.items()}
    assert dict(replayed.keys) == model.keys
    assert +completions == dict.fromkeys(model.completed, 1)
