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
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel

from .methods import readonly
from .object import EventSourced

QUEUE_TYPE = "objects_queue"


class Job(BaseModel):
    """A job as the queue stores it."""

    id: str
    payload: Any = None
    key: str | None = None
    attempts: int = 0
    max_attempts: int = 5
    visible_at: datetime
    status: Literal["ready", "claimed", "dead"] = "ready"
    claim_id: str | None = None
    token_hash: str | None = None
    lease_until: datetime | None = None
    last_error: str | None = None


class QueueState(BaseModel):
    """The jobs not yet completed, and counts."""

    jobs: dict[str, Job] = {}
    keys: dict[str, str] = {}
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


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class ObjectsQueue(EventSourced[QueueState, QueueEvent]):
    """A durable queue (``objects.queue(name)`` returns a handle to one)."""

    type_name = QUEUE_TYPE
    public = False  # never attachable from a browser: workers and app code only
    idle_timeout = 60.0
    backoff = 1.0  # seconds before the first retry of a failed job; doubled each time

    @staticmethod
    def apply(state: QueueState, event: QueueEvent) -> QueueState:
        """The queue after ``event`` (a new state; the old one stays intact for rollback)."""
        jobs, keys = dict(state.jobs), dict(state.keys)
        seq, completed = state.seq, state.completed
        job = jobs.get(event.id)
        if event.kind == "enqueued" and event.job is not None:
            jobs[event.id] = event.job
            if event.job.key is not None:
                keys[event.job.key] = event.id
            seq += 1
        elif job is None:
            pass  # a journal written by a newer release, or a completed job: nothing to do
        elif event.kind == "claimed":
            jobs[event.id] = job.model_copy(update={
                "status": "claimed", "claim_id": event.claim_id, "token_hash": event.token_hash,
                "lease_until": event.at, "attempts": job.attempts + 1,
            })
        elif event.kind == "extended":
            jobs[event.id] = job.model_copy(update={"lease_until": event.at})
        elif event.kind == "completed":
            del jobs[event.id]
            if job.key is not None:
                keys.pop(job.key, None)
            completed += 1
        elif event.kind == "failed":
            dead = job.attempts >= job.max_attempts
            jobs[event.id] = job.model_copy(update={
                "status": "dead" if dead else "ready", "visible_at": event.at or job.visible_at,
                "claim_id": None, "token_hash": None, "lease_until": None,
                "last_error": event.error,
            })
        elif event.kind == "retried":
            jobs[event.id] = job.model_copy(update={
                "status": "ready", "attempts": 0, "visible_at": event.at or job.visible_at,
                "last_error": None,
            })
        return QueueState(jobs=jobs, keys=keys, seq=seq, completed=completed)

    async def enqueue(
        self, payload: Any = None, key: str | None = None, delay: float = 0.0,
        max_attempts: int = 5,
    ) -> str:
        """Add a job; its id. A ``key`` already pending returns that job's id instead."""
        if key is not None and key in self.state.keys:
            return self.state.keys[key]
        if not 0 <= delay <= 366 * 86400 or not 1 <= max_attempts <= 1000:
            raise ValueError("delay must be 0 to 366 days, max_attempts 1 to 1000")
        job_id = f"{self.state.seq + 1:x}-{secrets.token_hex(4)}"
        job = Job(id=job_id, payload=payload, key=key, max_attempts=max_attempts,
                  visible_at=_now() + timedelta(seconds=delay))
        self.emit(QueueEvent(kind="enqueued", id=job_id, job=job))
        return job_id

    async def claim(self, worker: str, lease: float = 30.0) -> Claimed | None:
        """Take the oldest visible job (or one whose lease expired) for ``lease`` seconds."""
        now = _now()
        ready = [
            j for j in self.state.jobs.values()
            if (j.status == "ready" and j.visible_at <= now)
            or (j.status == "claimed" and j.lease_until is not None and j.lease_until < now)
        ]
        if not ready:
            return None
        job = min(ready, key=lambda j: (j.visible_at, j.id))
        token = secrets.token_urlsafe(24)
        until = now + timedelta(seconds=lease)
        claim_id = f"{worker[:64]}/{secrets.token_hex(4)}"
        self.emit(QueueEvent(kind="claimed", id=job.id, claim_id=claim_id,
                             token_hash=_hash(token), at=until))
        return Claimed(id=job.id, payload=job.payload, attempt=job.attempts + 1,
                       claim_id=claim_id, token=token, lease_until=until)

    def _held(self, job_id: str, token: str) -> Job | None:
        job = self.state.jobs.get(job_id)
        if job is None or job.status != "claimed" or job.token_hash != _hash(token):
            return None
        return job

    async def heartbeat(self, job_id: str, token: str, lease: float = 30.0) -> bool:
        """Extend the lease of a job this token holds; ``False`` if it no longer does."""
        if self._held(job_id, token) is None:
            return False
        self.emit(QueueEvent(kind="extended", id=job_id, at=_now() + timedelta(seconds=lease)))
        return True

    async def complete(self, job_id: str, token: str) -> bool:
        """Complete a job this token holds (its completion record); ``False`` otherwise."""
        if self._held(job_id, token) is None:
            return False
        self.emit(QueueEvent(kind="completed", id=job_id))
        return True

    async def fail(self, job_id: str, token: str, error: str = "") -> str | None:
        """Fail a job this token holds: retried after backoff, or dead; its status."""
        job = self._held(job_id, token)
        if job is None:
            return None
        visible = _now() + timedelta(seconds=self.backoff * 2 ** (job.attempts - 1))
        self.emit(QueueEvent(kind="failed", id=job_id, at=visible, error=error[:2000]))
        return self.state.jobs[job_id].status

    async def retry(self, job_id: str) -> bool:
        """Give a dead job its attempts back."""
        job = self.state.jobs.get(job_id)
        if job is None or job.status != "dead":
            return False
        self.emit(QueueEvent(kind="retried", id=job_id, at=_now()))
        return True

    @readonly
    async def stats(self) -> dict[str, int]:
        """How many jobs are ready, claimed, dead, and completed so far."""
        counts = {"ready": 0, "claimed": 0, "dead": 0}
        for job in self.state.jobs.values():
            counts[job.status] += 1
        return {**counts, "completed": self.state.completed}

    @readonly
    async def jobs(self, dead: bool = False) -> list[dict[str, Any]]:
        """The pending jobs (or the dead ones), without their token hashes."""
        return [
            j.model_dump(mode="json", exclude={"token_hash"}) for j in self.state.jobs.values()
            if (j.status == "dead") == dead
        ]
