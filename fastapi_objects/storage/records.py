"""The records the storage contract speaks in: checkpoints, journal entries, commits, nodes.

An object ``(type, key)`` is one checkpoint row plus an append-only journal:

- ``rev`` is the fencing revision: it grows by one per committed turn and every commit names
  the ``expected_rev`` it builds on (compare-and-set);
- ``journal_rev`` is the last journal entry's ``rev`` (entries are numbered 1, 2, 3... per object);
- ``snapshot_rev`` is the journal position the stored ``state`` already includes. Snapshot-style
  objects write their state every turn, so it equals ``journal_rev``; event-sourced objects write
  it every N events and replay the journal entries after it on thaw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

JSON = Any
"""A JSON-compatible value (dict, list, str, int, float, bool or None)."""

STATUSES = ("active", "hibernated")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The stored head of one object: its latest state and revisions."""

    type: str
    key: str
    rev: int
    journal_rev: int
    snapshot_rev: int
    state: JSON
    state_version: int
    status: str
    metadata: dict[str, JSON]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One entry of an object's append-only journal."""

    rev: int
    kind: str
    payload: JSON
    at: datetime


@dataclass(frozen=True, slots=True)
class Alarm:
    """A durable wake-up of one object, by name.

    ``due_at`` is when it fires next (a retry moves it); ``scheduled_at`` is the occurrence
    being delivered, which a handler's completion names so that a second delivery of the same
    occurrence changes nothing. ``every`` (seconds) or ``cron`` make it recurring.
    """

    type: str
    key: str
    name: str
    due_at: datetime
    scheduled_at: datetime
    payload: JSON = None
    every: float | None = None
    cron: str | None = None
    retry_count: int = 0
    status: str = "pending"
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class KeptState:
    """A state kept for restore: what the object held at ``rev``, committed at ``at``.

    Listings (``Storage.history``) leave ``state`` out (``None``); ``Storage.kept_state``
    reads it.
    """

    rev: int
    at: datetime
    state_version: int
    state: JSON = None


@dataclass(frozen=True, slots=True)
class AlarmWrite:
    """Part of a commit: store ``alarm`` under ``name``, or delete that alarm (``None``)."""

    name: str
    alarm: Alarm | None


@dataclass(slots=True)
class Commit:
    """What one or more turns of one object write, fenced by ``expected_rev``.

    ``expected_rev == 0`` creates the object. ``state`` is the new state's JSON text (the
    runtime encodes it once, to check it and to tell whether it changed, and storage keeps
    those bytes); ``None`` when the turns wrote only journal entries (an event-sourced object
    between snapshots), with ``state_version`` ``None`` too: the stored ones are kept.
    ``entries`` are ``(kind, payload)`` with the payload's JSON text. Read back, states and
    payloads are JSON values again.
    """

    type: str
    key: str
    expected_rev: int
    new_rev: int
    state: bytes | None
    state_version: int | None
    snapshot_rev: int
    journal_rev: int
    entries: Sequence[tuple[str, bytes]] = ()
    epoch: int | None = None
    """The ownership epoch the writer holds; ``None`` commits without the ownership fence."""
    alarms: Sequence[AlarmWrite] = ()
    """Alarms set, moved or deleted by the turns, written only if the commit applies."""
    history: bool = False
    """Keep ``state`` (when not ``None``) as the state at ``new_rev``, for restore."""


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """An unfenced status change (``active`` on thaw, ``hibernated`` on hibernation).

    ``release_epoch``: also give up ownership, if the writer's node still holds it at that
    epoch (hibernation releases the object so that any node may activate it next).
    """

    type: str
    key: str
    status: str
    release_epoch: int | None = None


@dataclass(frozen=True, slots=True)
class NodeProcess:
    """The process a node runs in, as another process of its machine can check it (Linux).

    ``boot_id`` is the kernel's boot id (new at every boot), ``pid_namespace`` the inode of
    the process's PID namespace (a container has its own), ``started`` its start time in clock
    ticks since boot (field 22 of ``/proc/<pid>/stat``): a pid reused by a later process has
    another start time.
    """

    boot_id: str
    pid_namespace: int
    pid: int
    started: int


DECLARED_DEAD = datetime(1970, 1, 1, tzinfo=UTC)
"""The heartbeat of a node another node proved dead: older than any ``node_ttl``, so every
claim takes its objects at once (``Storage.declare_dead``)."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node of the cluster as the database knows it."""

    node_id: str
    address: str | None
    region: str | None
    machine: str | None
    started_at: datetime
    heartbeat_at: datetime
    alive: bool
    owned: int
    """How many objects it owns now."""
    process: NodeProcess | None = None
    """Its process, when its platform tells (``None``: it can only die by ``node_ttl``)."""

    @property
    def declared_dead(self) -> bool:
        """Whether a node of its machine proved it dead (its heartbeat is ``DECLARED_DEAD``)."""
        return self.heartbeat_at <= DECLARED_DEAD


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of asking to own an object.

    ``granted``: this node owns it now, at ``epoch``. Otherwise ``owner`` (a live node) does,
    reachable at ``address`` (``None`` when it advertises none).
    """

    granted: bool
    epoch: int
    owner: str | None = None
    address: str | None = None
    taken_from: str | None = None
    """When granted: the node that still owned it (dead, by its heartbeat), if any."""


@dataclass(frozen=True, slots=True)
class ObjectQuery:
    """Filters for listing objects without thawing them; see ``Storage.query``."""

    type: str | None = None
    status: str | None = None
    status_in: tuple[str, ...] | None = None
    key_prefix: str | None = None
    state_version: int | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    limit: int = 100
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class ObjectPage:
    """One page of a query; pass ``next_cursor`` back as ``cursor`` for the next page."""

    items: list[Checkpoint]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class TypeStats:
    """How many objects of one type are in one status."""

    type: str
    status: str
    count: int
