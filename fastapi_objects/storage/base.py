"""The storage contract every backend implements, and the records it speaks in.

An object ``(type, key)`` is one checkpoint row plus an append-only journal:

- ``rev`` is the fencing revision: it grows by one per committed turn and every commit names
  the ``expected_rev`` it builds on (compare-and-set);
- ``journal_rev`` is the last journal entry's ``rev`` (entries are numbered 1, 2, 3... per object);
- ``snapshot_rev`` is the journal position the stored ``state`` already includes. Snapshot-style
  objects write their state every turn, so it equals ``journal_rev``; event-sourced objects write
  it every N events and replay the journal entries after it on thaw.
"""

from __future__ import annotations

import base64
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
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
class AlarmWrite:
    """Part of a commit: store ``alarm`` under ``name``, or delete that alarm (``None``)."""

    name: str
    alarm: Alarm | None


@dataclass(slots=True)
class Commit:
    """What one or more turns of one object write, fenced by ``expected_rev``.

    ``expected_rev == 0`` creates the object. ``state`` is ``None`` when the turns wrote only
    journal entries (an event-sourced object between snapshots); ``state_version`` is then
    ``None`` too and the stored one is kept.
    """

    type: str
    key: str
    expected_rev: int
    new_rev: int
    state: JSON | None
    state_version: int | None
    snapshot_rev: int
    journal_rev: int
    entries: list[tuple[str, JSON]] = field(default_factory=list)
    epoch: int | None = None
    """The ownership epoch the writer holds; ``None`` commits without the ownership fence."""
    alarms: list[AlarmWrite] = field(default_factory=list)
    """Alarms set, moved or deleted by the turns, written only if the commit applies."""


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


class Storage(ABC):
    """The async storage contract: checkpoints, journal, fenced batched commits and queries."""

    url: str

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections; the default does nothing."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default does nothing."""

    @abstractmethod
    async def create_tables(self) -> None:
        """Create the version-1 tables when missing (idempotent)."""

    @abstractmethod
    async def load(self, type: str, key: str) -> Checkpoint | None:
        """Return the object's checkpoint, or ``None`` if it was never committed."""

    @abstractmethod
    async def read_journal(
        self, type: str, key: str, after_rev: int = 0, limit: int | None = None
    ) -> list[JournalEntry]:
        """Return journal entries with ``rev > after_rev`` in order."""

    @abstractmethod
    async def commit(
        self,
        commits: Sequence[Commit],
        statuses: Sequence[StatusUpdate] = (),
        node_id: str | None = None,
    ) -> list[bool]:
        """Apply many objects' commits in ONE transaction.

        Returns one flag per commit: ``False`` when its ``expected_rev`` did not match, or
        when it carries an ``epoch`` and ``node_id`` does not own the object at that epoch
        (that commit wrote nothing; the others still apply). Commits must name distinct
        objects. Raises ``StorageUnavailable`` when the transaction itself failed.
        """

    # -- nodes and ownership (DESIGN §3 "Ownership across nodes") ---------------------------

    @abstractmethod
    async def register_node(
        self, node_id: str, address: str | None, region: str | None, machine: str | None
    ) -> None:
        """Insert or refresh this node's row, heartbeat included."""

    @abstractmethod
    async def heartbeat(self, node_id: str) -> bool:
        """Stamp this node's heartbeat with the database's clock; ``False`` if its row is gone."""

    @abstractmethod
    async def deregister_node(self, node_id: str) -> None:
        """Release every object the node owns and delete its row (a graceful stop)."""

    @abstractmethod
    async def nodes(self, ttl: float, count_owned: bool = True) -> list[NodeInfo]:
        """Every registered node; ``alive`` when its heartbeat is younger than ``ttl``.

        ``owned`` counts each node's objects (a scan of the owners), or is 0 without
        ``count_owned`` (what a node reads at every heartbeat).
        """

    @abstractmethod
    async def prune_nodes(self, dead_for: float) -> int:
        """Delete the rows of nodes whose heartbeat is older than ``dead_for`` seconds.

        Their objects stay owned by a dead node (so the next claim takes them over). Returns
        how many rows went.
        """

    @abstractmethod
    async def cluster_secret(self) -> str:
        """The random secret that signs calls between this cluster's nodes (made on first use).

        Every node sharing the database reads the same one (``OBJECTS_CLUSTER_SECRET``, when
        set, is used instead).
        """

    @abstractmethod
    async def claim(self, type: str, key: str, node_id: str, ttl: float) -> Claim:
        """Take ownership of an object and bump its epoch, if it is free.

        Free means: never owned, released, owned by this node already (it lost its instance),
        or owned by a node whose heartbeat is older than ``ttl`` (by the database's clock).
        """

    async def claim_many(
        self, idents: Sequence[tuple[str, str]], node_id: str, ttl: float
    ) -> dict[tuple[str, str], Claim]:
        """``claim`` for many objects at once (a thaw storm: one statement where it can)."""
        return {ident: await self.claim(ident[0], ident[1], node_id, ttl) for ident in idents}

    async def load_many(
        self, idents: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Checkpoint]:
        """The checkpoints of many objects (the ones never committed are absent)."""
        found = {}
        for type, key in idents:
            cp = await self.load(type, key)
            if cp is not None:
                found[(type, key)] = cp
        return found

    # -- alarms --------------------------------------------------------------------------------

    async def load_alarms(self, type: str, key: str) -> list[Alarm]:
        """The object's alarms (pending and failed), by name."""
        return (await self.load_alarms_many([(type, key)])).get((type, key), [])

    @abstractmethod
    async def load_alarms_many(
        self, idents: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[Alarm]]:
        """The alarms of many objects (one query), each object's by name; none: left out."""

    @abstractmethod
    async def claim_due_alarms(
        self, limit: int, lease: float, ahead: float = 0.0
    ) -> list[Alarm]:
        """Take up to ``limit`` pending alarms due within ``ahead`` seconds, not taken by a node.

        Each is marked taken until ``ahead + lease`` seconds from now (``FOR UPDATE SKIP
        LOCKED`` on PostgreSQL), so that exactly one node delivers it, on time, meanwhile.
        """

    @abstractmethod
    async def record_alarm_failure(self, alarm: Alarm) -> bool:
        """Store a failed delivery's retry state if that occurrence is still the stored one.

        Writes ``due_at``, ``retry_count``, ``status`` and ``last_error`` and frees the alarm
        for the next delivery; returns whether the occurrence was still there.
        """

    @abstractmethod
    async def owners(self, idents: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The node owning each object of ``idents`` (released or unowned ones are absent)."""

    @abstractmethod
    async def query(self, query: ObjectQuery) -> ObjectPage:
        """List checkpoints matching ``query`` ordered by ``(type, key)``."""

    @abstractmethod
    async def stats(self) -> list[TypeStats]:
        """Count objects per type and status."""

    @abstractmethod
    async def delete(self, type: str, key: str) -> bool:
        """Purge an object, its journal and its alarms; return whether it existed."""

    @abstractmethod
    async def destroy(self, type: str, key: str, node_id: str, epoch: int) -> bool:
        """Delete an object for good as its owner: state, journal, alarms and ownership.

        Fenced: only while ``node_id`` owns it at ``epoch`` (else nothing changes and the
        answer is ``False``). The next call finds no object and starts it fresh.
        """


def encode_cursor(type: str, key: str) -> str:
    """Encode the position after ``(type, key)`` as an opaque cursor string."""
    return base64.urlsafe_b64encode(json.dumps([type, key]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    """Decode a cursor made by ``encode_cursor``; raise ``ValueError`` when malformed."""
    try:
        type, key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except Exception as exc:
        raise ValueError(f"malformed cursor {cursor!r}") from exc
    return str(type), str(key)
