"""A queue's state, its events and the pure ``apply`` that joins them; and the index of its jobs.

The state is what a queue's snapshot stores (its JSON has not changed since the first
release): the pending jobs, the pending keys, a sequence number and the count of completed
jobs. ``apply`` costs O(1) per event whatever the number of jobs: the maps are ``PMap``s and
the new state is built without validation (``model_construct``); the old state stays intact
for the runtime to go back to when a turn raises.

``JobIndex`` is what ``claim`` and ``stats`` read instead of scanning every job: heaps of the
ready jobs by visibility and of the claimed ones by lease end, and counts by status. It is
derived from one state object and kept in memory only.
"""

from __future__ import annotations

import heapq
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from ._pmap import PMap

Status = Literal["ready", "claimed", "dead"]


class Job(BaseModel):
    """A job as the queue stores it."""

    id: str
    payload: Any = None
    key: str | None = None
    attempts: int = 0
    max_attempts: int = 5
    visible_at: datetime
    status: Status = "ready"
    claim_id: str | None = None
    token_hash: str | None = None
    lease_until: datetime | None = None
    last_error: str | None = None


class QueueState(BaseModel):
    """The jobs not yet completed, and counts."""

    jobs: PMap[str, Job] = PMap()
    keys: PMap[str, str] = PMap()
    seq: int = 0
    completed: int = 0


class QueueEvent(BaseModel):
    """One change of a queue (its journal entries)."""

    kind: Literal["enqueued", "claimed", "extended", "completed", "failed", "retried"]
    id: str
    job: Job | None = None
    claim_id: str | None = None
    token_hash: str | None = None
    at: datetime | None = None  # claimed/extended: lease end; failed/retried: visible again
    error: str | None = None


class Claimed(BaseModel):
    """What a worker gets: the job, and the token that completes or fails it."""

    id: str
    payload: Any = None
    attempt: int
    claim_id: str
    token: str
    lease_until: datetime


def apply_event(state: QueueState, event: QueueEvent) -> QueueState:
    """The queue after ``event``: a new state, sharing what did not change with ``state``."""
    jobs, keys = state.jobs, state.keys
    seq, completed = state.seq, state.completed
    job = jobs.get(event.id)
    if event.kind == "enqueued" and event.job is not None:
        jobs = jobs.set(event.id, event.job)
        if event.job.key is not None:
            keys = keys.set(event.job.key, event.id)
        seq += 1
    elif job is None:
        return state  # a journal written by a newer release, or a completed job: nothing to do
    elif event.kind == "claimed":
        jobs = jobs.set(event.id, job.model_copy(update={
            "status": "claimed", "claim_id": event.claim_id, "token_hash": event.token_hash,
            "lease_until": event.at, "attempts": job.attempts + 1,
        }))
    elif event.kind == "extended":
        jobs = jobs.set(event.id, job.model_copy(update={"lease_until": event.at}))
    elif event.kind == "completed":
        jobs = jobs.delete(event.id)
        if job.key is not None:
            keys = keys.delete(job.key)
        completed += 1
    elif event.kind == "failed":
        dead = job.attempts >= job.max_attempts
        jobs = jobs.set(event.id, job.model_copy(update={
            "status": "dead" if dead else "ready", "visible_at": event.at or job.visible_at,
            "claim_id": None, "token_hash": None, "lease_until": None,
            "last_error": event.error,
        }))
    elif event.kind == "retried":
        jobs = jobs.set(event.id, job.model_copy(update={
            "status": "ready", "attempts": 0, "visible_at": event.at or job.visible_at,
            "last_error": None,
        }))
    return state.model_copy(update={"jobs": jobs, "keys": keys, "seq": seq, "completed": completed})


class JobIndex:
    """The jobs of one state, ordered for claiming and counted by status.

    Heap entries are never removed when a job changes: an entry whose job no longer matches it
    (claimed, completed, its lease extended) is dropped when it comes to the top. ``state`` is
    the state object the index describes; ``changed`` moves it to the next one.
    """

    __slots__ = ("counts", "leases", "ready", "state")

    def __init__(self, state: QueueState) -> None:
        self.state = state
        self.counts: dict[str, int] = {"ready": 0, "claimed": 0, "dead": 0}
        # (visible_at, len(id), id): jobs visible at the same time go by their sequence
        # number, the hex digits that start the id, whose length grows with it.
        self.ready: list[tuple[datetime, int, str]] = []
        self.leases: list[tuple[datetime, str]] = []  # (lease_until, id)
        for job in state.jobs.values():
            self._add(job)

    def _add(self, job: Job) -> None:
        self.counts[job.status] += 1
        if job.status == "ready":
            heapq.heappush(self.ready, (job.visible_at, len(job.id), job.id))
        elif job.status == "claimed" and job.lease_until is not None:
            heapq.heappush(self.leases, (job.lease_until, job.id))

    def changed(self, before: Job | None, after: Job | None, state: QueueState) -> None:
        """One job went from ``before`` to ``after`` (``None``: absent), giving ``state``."""
        if before is not None:
            self.counts[before.status] -= 1
        if after is not None:
            self._add(after)
        self.state = state

    def next_due(self, now: datetime) -> Job | None:
        """The job a claim takes at ``now``: a lease run out first, else the oldest visible."""
        jobs = self.state.jobs
        leases = self.leases
        while leases:
            until, job_id = leases[0]
            job = jobs.get(job_id)
            if job is None or job.status != "claimed" or job.lease_until != until:
                heapq.heappop(leases)
                continue
            if until < now:
                return job
            break
        ready = self.ready
        while ready:
            visible, _, job_id = ready[0]
            job = jobs.get(job_id)
            if job is None or job.status != "ready" or job.visible_at != visible:
                heapq.heappop(ready)
                continue
            return job if visible <= now else None
        return None
