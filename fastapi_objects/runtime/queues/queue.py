"""Durable work queues: one built-in event-sourced object per queue (Squidie's dispatch agent).

Jobs live in the queue object's state, rebuilt on thaw from its snapshot and journal, so a
queue is owned by one node of the cluster like any object and nothing lives only in memory.
A worker *claims* a visible job for a lease and gets a claim token (only its hash is stored);
heartbeats extend the lease; completion and failure are fenced by the token, so a worker whose
lease expired cannot complete a job that was claimed again. Failures retry with backoff up to
``max_attempts``, then the job is dead-lettered; ``retry`` revives it. Each job's completion is
one ``completed`` event in the journal: its completion record.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import Field

from ..methods import readonly
from ..object import EventSourced
from .state import Claimed, Job, JobIndex, QueueEvent, QueueState, apply_event

__all__ = ["MAX_BATCH", "QUEUE_TYPE", "Claimed", "Job", "ObjectsQueue", "QueueEvent", "QueueState"]

QUEUE_TYPE = "objects_queue"
MAX_BATCH = 1000  # jobs one claim_many may take
_YEAR = 366 * 86400
Seconds = Annotated[float, Field(ge=0, le=_YEAR)]
Lease = Annotated[float, Field(gt=0, le=_YEAR)]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _storable(error: str) -> str:
    """An error text that storage takes: an exception's message may hold anything."""
    return error[:2000].encode("utf-8", "replace").decode().replace("\x00", "?")


class ObjectsQueue(EventSourced[QueueState, QueueEvent]):
    """A durable queue (``objects.queue(name)`` returns a handle to one)."""

    type_name = QUEUE_TYPE
    public = False  # never attachable from a browser: workers and app code only
    idle_timeout = 60.0
    backoff = 1.0  # seconds before the first retry of a failed job; doubled each time
    snapshot_every = 5000
    _jobs_index: JobIndex | None = None

    @staticmethod
    def apply(state: QueueState, event: QueueEvent) -> QueueState:
        """The queue after ``event`` (a new state; the old one stays intact for rollback)."""
        return apply_event(state, event)

    def _index(self) -> JobIndex:
        """The index of the current state (built again after a thaw or a rolled-back turn)."""
        index = self._jobs_index
        if index is None or index.state is not self.state:
            index = self._jobs_index = JobIndex(self.state)
        return index

    def _change(self, event: QueueEvent) -> None:
        """Emit ``event`` and keep the index in step with the state."""
        index = self._index()
        before = self.state.jobs.get(event.id)
        self.emit(event)
        index.changed(before, self.state.jobs.get(event.id), self.state)

    async def enqueue(
        self, payload: Any = None, key: str | None = None, delay: Seconds = 0.0,
        max_attempts: Annotated[int, Field(ge=1, le=1000)] = 5,
    ) -> str:
        """Add a job; its id. A ``key`` already pending returns that job's id instead."""
        if key is not None and key in self.state.keys:
            return self.state.keys[key]
        job_id = f"{self.state.seq + 1:x}-{secrets.token_hex(4)}"
        job = Job(id=job_id, payload=payload, key=key, max_attempts=max_attempts,
                  visible_at=_now() + timedelta(seconds=delay))
        self._change(QueueEvent(kind="enqueued", id=job_id, job=job))
        return job_id

    async def claim(self, worker: str, lease: Lease = 30.0) -> Claimed | None:
        """Take the oldest visible job (or one whose lease expired) for ``lease`` seconds."""
        jobs = await self.claim_many(worker, lease, 1)
        return jobs[0] if jobs else None

    async def claim_many(
        self, worker: str, lease: Lease = 30.0, limit: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 1
    ) -> list[Claimed]:
        """Take up to ``limit`` jobs at once, in the order ``claim`` takes them (one turn)."""
        now = _now()
        until = now + timedelta(seconds=lease)
        index = self._index()
        claimed: list[Claimed] = []
        while len(claimed) < limit and (job := index.next_due(now)) is not None:
            token = secrets.token_urlsafe(24)
            claim_id = f"{worker[:64]}/{secrets.token_hex(4)}"
            self._change(QueueEvent(kind="claimed", id=job.id, claim_id=claim_id,
                                    token_hash=_hash(token), at=until))
            claimed.append(Claimed(id=job.id, payload=job.payload, attempt=job.attempts + 1,
                                   claim_id=claim_id, token=token, lease_until=until))
        return claimed

    def _held(self, job_id: str, token: str) -> Job | None:
        job = self.state.jobs.get(job_id)
        if job is None or job.status != "claimed" or job.token_hash != _hash(token):
            return None
        return job

    async def heartbeat(self, job_id: str, token: str, lease: Lease = 30.0) -> bool:
        """Extend the lease of a job this token holds; ``False`` if it no longer does."""
        return (await self.heartbeat_many([(job_id, token)], lease))[0]

    async def heartbeat_many(self, jobs: list[tuple[str, str]], lease: Lease = 30.0) -> list[bool]:
        """``heartbeat`` for each ``(job_id, token)``, in one turn."""
        until = _now() + timedelta(seconds=lease)
        return self._each_held(jobs, lambda job_id: QueueEvent(kind="extended", id=job_id,
                                                                at=until))

    async def complete(self, job_id: str, token: str) -> bool:
        """Complete a job this token holds (its completion record); ``False`` otherwise."""
        return (await self.complete_many([(job_id, token)]))[0]

    async def complete_many(self, jobs: list[tuple[str, str]]) -> list[bool]:
        """``complete`` for each ``(job_id, token)``, in one turn."""
        return self._each_held(jobs, lambda job_id: QueueEvent(kind="completed", id=job_id))

    def _each_held(
        self, jobs: list[tuple[str, str]], event: Callable[[str], QueueEvent]
    ) -> list[bool]:
        """Emit ``event(job_id)`` for each job its token still holds; which ones were held."""
        held = []
        for job_id, token in jobs:
            ok = self._held(job_id, token) is not None
            if ok:
                self._change(event(job_id))
            held.append(ok)
        return held

    async def fail(self, job_id: str, token: str, error: str = "") -> str | None:
        """Fail a job this token holds: retried after backoff, or dead; its status."""
        job = self._held(job_id, token)
        if job is None:
            return None
        visible = _now() + timedelta(seconds=self.backoff * 2 ** (job.attempts - 1))
        self._change(QueueEvent(kind="failed", id=job_id, at=visible, error=_storable(error)))
        return self.state.jobs[job_id].status

    async def retry(self, job_id: str) -> bool:
        """Give a dead job its attempts back."""
        job = self.state.jobs.get(job_id)
        if job is None or job.status != "dead":
            return False
        self._change(QueueEvent(kind="retried", id=job_id, at=_now()))
        return True

    @readonly
    async def stats(self) -> dict[str, int]:
        """How many jobs are ready, claimed, dead, and completed so far."""
        return {**self._index().counts, "completed": self.state.completed}

    @readonly
    async def jobs(self, dead: bool = False) -> list[dict[str, Any]]:
        """The pending jobs (or the dead ones), without their token hashes."""
        jobs = sorted((j for j in self.state.jobs.values() if (j.status == "dead") == dead),
                      key=lambda j: j.visible_at)
        return [j.model_dump(mode="json", exclude={"token_hash"}) for j in jobs]
