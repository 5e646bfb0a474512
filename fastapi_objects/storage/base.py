"""The storage contract every backend implements (its records are in ``records.py``)."""

from __future__ import annotations

import base64
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime

from .records import (
    DECLARED_DEAD,
    JSON,
    STATUSES,
    Alarm,
    AlarmWrite,
    Checkpoint,
    Claim,
    Commit,
    JournalEntry,
    KeptState,
    NodeInfo,
    NodeProcess,
    ObjectPage,
    ObjectQuery,
    StatusUpdate,
    TypeStats,
)

__all__ = [
    "DECLARED_DEAD",
    "Alarm",
    "AlarmWrite",
    "Checkpoint",
    "Claim",
    "Commit",
    "JSON",
    "JournalEntry",
    "KeptState",
    "NodeInfo",
    "NodeProcess",
    "ObjectPage",
    "ObjectQuery",
    "STATUSES",
    "StatusUpdate",
    "Storage",
    "Thawed",
    "TypeStats",
    "decode_cursor",
    "encode_cursor",
]


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
        """Return the object's checkpoint, or ``None`` if it was never committed.

        Its ``status`` is ``active`` while a node holds the object, else the stored one
        (``_listing.py``); so are those of ``query`` and ``stats``.
        """

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
        self, node_id: str, address: str | None, region: str | None, machine: str | None,
        process: NodeProcess | None = None,
    ) -> None:
        """Insert or refresh this node's row, heartbeat and process included."""

    @abstractmethod
    async def heartbeat(self, node_id: str) -> bool:
        """Stamp this node's heartbeat with the database's clock.

        ``False`` (nothing stamped) if its row is gone or another node declared it dead.
        """

    @abstractmethod
    async def declare_dead(self, node_id: str, process: NodeProcess) -> bool:
        """Mark a node that another node proved dead: its heartbeat becomes ``DECLARED_DEAD``.

        Only while its row still records ``process`` (not a later process registered under
        the same id). Every claim then takes its objects at once, as from any dead node.
        Returns whether the row was marked.
        """

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

    async def thaw_many(
        self, idents: Sequence[tuple[str, str]], node_id: str, ttl: float
    ) -> dict[tuple[str, str], Thawed]:
        """Claim objects and read the checkpoints of the granted ones.

        What a thaw batch needs, in one round trip where the backend can (SQL: one
        statement, or one transaction on SQLite's writer). Each object gets ``(claim,
        checkpoint)``: the checkpoint is ``None`` when the claim was refused or the object
        was never committed, and a ``ValueError`` when its stored row cannot be decoded (only
        that object then fails to thaw).
        """
        claims = await self.claim_many(idents, node_id, ttl)
        granted = [ident for ident in idents if claims[ident].granted]
        loaded = await self.load_many(granted) if granted else {}
        return {ident: (claims[ident], loaded.get(ident)) for ident in idents}

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

    # -- kept states, for restore (storage version 5) --------------------------------------------

    @abstractmethod
    async def history(
        self, type: str, key: str, before_rev: int | None = None, limit: int = 100
    ) -> list[KeptState]:
        """The object's kept states, newest first, without the states themselves.

        ``before_rev``: only those older than it (the next page of a long history).
        """

    @abstractmethod
    async def kept_state(
        self, type: str, key: str, *, rev: int | None = None, at: datetime | None = None
    ) -> KeptState | None:
        """The newest kept state at or before ``rev``, or committed at or before ``at``."""

    @abstractmethod
    async def prune_history(self, type: str, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` kept states of ``type`` committed before ``before``.

        Each object's newest state of those stays: it is the state the object held at
        ``before``, so a restore to any time since still finds it. Returns how many went.
        """

    async def clock(self) -> datetime:
        """The time by the clock the storage stamps heartbeats with (here: this machine's)."""
        return datetime.now(UTC)

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
        """Purge an object, its journal, alarms and history; return whether it existed."""

    @abstractmethod
    async def destroy(self, type: str, key: str, node_id: str, epoch: int) -> bool:
        """Delete an object for good as its owner: state, journal, alarms, history, ownership.

        Fenced: only while ``node_id`` owns it at ``epoch`` (else nothing changes and the
        answer is ``False``). The next call finds no object and starts it fresh.
        """


Thawed = tuple[Claim, Checkpoint | ValueError | None]
"""What ``thaw_many`` gives each object: its claim, and its checkpoint (see there)."""


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
