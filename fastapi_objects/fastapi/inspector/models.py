"""The shapes of the inspector's JSON API (its OpenAPI schema), and what its page renders."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TypeInfo(BaseModel):
    """A registered object type and how many of its objects are stored, by status."""

    type: str
    counts: dict[str, int] = Field(description="Stored objects by status.")
    total: int
    event_sourced: bool
    history: float | None = Field(description="Seconds of kept states (history), if any.")
    public: bool = Field(description="Whether browsers may attach through objects.router.")


class TypeList(BaseModel):
    """Every registered type."""

    types: list[TypeInfo]


class ObjectSummary(BaseModel):
    """One stored object in a listing (read from storage: nothing is woken)."""

    key: str
    rev: int
    state_version: int
    status: str
    owner: str | None = Field(description="The node holding it live, if any.")
    created_at: datetime
    updated_at: datetime


class ObjectList(BaseModel):
    """A page of a type's objects, by key; pass ``next`` back as ``cursor``."""

    objects: list[ObjectSummary]
    next: str | None


class AlarmInfo(BaseModel):
    """One of an object's alarms (a failed one keeps its last error)."""

    name: str
    status: str
    due_at: datetime
    scheduled_at: datetime
    retry_count: int
    every: float | None
    cron: str | None
    last_error: str | None
    payload: Any = None


class ConnectionInfo(BaseModel):
    """A client attached to the object (as its owner knows it)."""

    id: str
    tags: list[str]
    state: dict[str, Any]


class ObjectDetail(BaseModel):
    """One object: its state as stored (event-sourced: replayed), and who holds and watches it."""

    type: str
    key: str
    rev: int
    state_version: int
    status: str
    owner: str | None
    state: Any
    alarms: list[AlarmInfo]
    connections: list[ConnectionInfo]


class JournalEntryOut(BaseModel):
    """One journal entry."""

    rev: int
    kind: str
    payload: Any = None
    at: datetime


class JournalPage(BaseModel):
    """Journal entries after ``after``; ``next`` is the ``after`` of the next page."""

    entries: list[JournalEntryOut]
    next: int | None


class KeptInfo(BaseModel):
    """A state kept for restore (its class's ``history`` option)."""

    rev: int
    at: datetime
    state_version: int


class HistoryPage(BaseModel):
    """Kept states, newest first; ``next`` is the ``before`` of the next page."""

    revisions: list[KeptInfo]
    next: int | None


class NodeInfoOut(BaseModel):
    """A node of the cluster, its lease and how many objects it owns."""

    node_id: str
    address: str | None
    region: str | None
    machine: str | None
    pid: int | None
    started_at: datetime
    heartbeat_at: datetime | None = Field(description="None for a node proven dead.")
    state: str = Field(description="alive, dead, or dead (proven)")
    lease_left: float = Field(
        description="Seconds until other nodes may take its objects (0 once dead)."
    )
    owned: int


class NodeList(BaseModel):
    """Every registered node, by the database's clock."""

    nodes: list[NodeInfoOut]
    ttl: float
    this_node: str


class JobInfo(BaseModel):
    """A job of a durable queue (its claim token is never shown)."""

    id: str
    status: str
    attempts: int
    max_attempts: int
    visible_at: datetime
    lease_until: datetime | None
    last_error: str | None
    key: str | None
    payload: Any = None


class QueueInfo(BaseModel):
    """A durable queue's jobs: pending, leased (claimed by a worker) and dead."""

    name: str
    pending: list[JobInfo]
    leased: list[JobInfo]
    dead: list[JobInfo]
    completed: int


class QueueSummary(BaseModel):
    """A durable queue and its job counts."""

    name: str
    pending: int
    leased: int
    dead: int
    completed: int


class QueueList(BaseModel):
    """The durable queues, by name."""

    queues: list[QueueSummary]
    next: str | None


class Edited(BaseModel):
    """An edit, committed: the object's new rev and state."""

    rev: int
    state: Any


class RestoreRequest(BaseModel):
    """What to restore: a rev (event-sourced: a journal rev) or a time."""

    model_config = ConfigDict(extra="forbid")

    rev: int | None = Field(default=None, ge=1)
    at: datetime | None = None


class Restored(BaseModel):
    """A restore, committed: the new rev, the rev restored and the state."""

    rev: int
    restored: int
    state: Any


class Retried(BaseModel):
    """Whether the dead job was given its attempts back."""

    retried: bool
