"""In-memory storage: same contract as SQL, nothing survives the process. For tests and demos."""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from pydantic_core import from_json

from ._listing import listed_status
from .base import (
    DECLARED_DEAD,
    Alarm,
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
    Storage,
    TypeStats,
    decode_cursor,
    encode_cursor,
)


class MemoryStorage(Storage):
    """Storage in a dict. Values are deep-copied in and out, as a database would."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._checkpoints: dict[tuple[str, str], Checkpoint] = {}
        self._journal: dict[tuple[str, str], list[JournalEntry]] = {}
        self._nodes: dict[str, NodeInfo] = {}
        self._owners: dict[tuple[str, str], tuple[str | None, int]] = {}
        self._alarms: dict[tuple[str, str, str], tuple[Alarm, float]] = {}  # alarm, taken until
        self._history: dict[tuple[str, str], dict[int, KeptState]] = {}  # by rev
        self._secret: str | None = None

    async def create_tables(self) -> None:
        """Nothing to create."""

    async def load(self, type: str, key: str) -> Checkpoint | None:
        """Return a copy of the checkpoint or ``None``."""
        cp = self._checkpoints.get((type, key))
        return None if cp is None else self._listed(cp)

    def _status(self, cp: Checkpoint) -> str:
        """The status listings show for ``cp`` (``_listing.py``)."""
        return listed_status(cp.status, self._owners.get((cp.type, cp.key), (None, 0))[0])

    def _listed(self, cp: Checkpoint) -> Checkpoint:
        """A copy of ``cp`` with the status listings show."""
        return replace(copy.deepcopy(cp), status=self._status(cp))

    async def read_journal(
        self, type: str, key: str, after_rev: int = 0, limit: int | None = None
    ) -> list[JournalEntry]:
        """Return journal entries after ``after_rev``."""
        entries = [e for e in self._journal.get((type, key), []) if e.rev > after_rev]
        return copy.deepcopy(entries[:limit] if limit is not None else entries)

    async def commit(
        self,
        commits: Sequence[Commit],
        statuses: Sequence[StatusUpdate] = (),
        node_id: str | None = None,
    ) -> list[bool]:
        """Apply the commits whose ``expected_rev`` (and ownership epoch) match."""
        now = datetime.now(UTC)
        result = []
        for c in commits:
            ident = (c.type, c.key)
            old = self._checkpoints.get(ident)
            owner = self._owners.get(ident)
            fenced_out = c.epoch is not None and owner != (node_id, c.epoch)
            if (old.rev if old else 0) != c.expected_rev or fenced_out:
                result.append(False)
                continue
            state = from_json(c.state) if c.state is not None else old.state if old else None
            version = c.state_version if c.state_version is not None else (
                old.state_version if old else 0
            )
            self._checkpoints[ident] = Checkpoint(
                type=c.type, key=c.key, rev=c.new_rev, journal_rev=c.journal_rev,
                snapshot_rev=c.snapshot_rev, state=state, state_version=version,
                status=old.status if old else "active", metadata=old.metadata if old else {},
                created_at=old.created_at if old else now, updated_at=now,
            )
            for write in c.alarms:
                if write.alarm is None:
                    self._alarms.pop((c.type, c.key, write.name), None)
                else:
                    self._alarms[(c.type, c.key, write.name)] = (write.alarm, 0.0)
            if c.history and c.state is not None:
                self._history.setdefault(ident, {})[c.new_rev] = KeptState(
                    c.new_rev, now, version, state
                )
            first = c.journal_rev - len(c.entries) + 1
            self._journal.setdefault(ident, []).extend(
                JournalEntry(first + i, kind, from_json(payload), now)
                for i, (kind, payload) in enumerate(c.entries)
            )
            result.append(True)
        for s in statuses:
            old = self._checkpoints.get((s.type, s.key))
            if old is not None:
                self._checkpoints[(s.type, s.key)] = replace(old, status=s.status)
            owner = self._owners.get((s.type, s.key))
            if s.release_epoch is not None and owner == (node_id, s.release_epoch):
                if (s.type, s.key) in self._checkpoints:
                    self._owners[(s.type, s.key)] = (None, s.release_epoch)
                else:  # never committed: no owner row left behind
                    del self._owners[(s.type, s.key)]
        return result

    # -- kept states ---------------------------------------------------------------------------

    async def history(
        self, type: str, key: str, before_rev: int | None = None, limit: int = 100
    ) -> list[KeptState]:
        """Kept states, newest first, without their states."""
        kept = sorted(self._history.get((type, key), {}).values(), key=lambda k: -k.rev)
        return [
            replace(k, state=None) for k in kept if before_rev is None or k.rev < before_rev
        ][:limit]

    async def kept_state(
        self, type: str, key: str, *, rev: int | None = None, at: datetime | None = None
    ) -> KeptState | None:
        """The newest kept state at or before ``rev`` (or ``at``)."""
        found = [
            k for k in self._history.get((type, key), {}).values()
            if (rev is None or k.rev <= rev) and (at is None or k.at <= at)
        ]
        return copy.deepcopy(max(found, key=lambda k: k.rev)) if found else None

    async def prune_history(self, type: str, before: datetime, limit: int) -> int:
        """Delete kept states older than ``before`` but each object's newest of those."""
        pruned = 0
        for (t, _), kept in self._history.items():
            old = sorted(r for r, k in kept.items() if t == type and k.at < before)
            for rev in old[:-1][: limit - pruned]:
                del kept[rev]
                pruned += 1
        return pruned

    # -- alarms --------------------------------------------------------------------------------

    async def load_alarms_many(
        self, idents: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[Alarm]]:
        """The objects' alarms, each object's by name."""
        wanted = set(idents)
        found: dict[tuple[str, str], list[Alarm]] = {}
        for (t, k, _), (alarm, _) in sorted(self._alarms.items()):
            if (t, k) in wanted:
                found.setdefault((t, k), []).append(alarm)
        return found

    async def claim_due_alarms(
        self, limit: int, lease: float, ahead: float = 0.0
    ) -> list[Alarm]:
        """Take untaken alarms due within ``ahead`` seconds, until ``ahead + lease`` from now."""
        due_by = datetime.now(UTC) + timedelta(seconds=ahead)
        clock = time.monotonic()
        due = sorted(
            (alarm.due_at, ident) for ident, (alarm, taken) in self._alarms.items()
            if alarm.status == "pending" and alarm.due_at <= due_by and taken <= clock
        )[:limit]
        taken = []
        for _, ident in due:
            alarm = self._alarms[ident][0]
            self._alarms[ident] = (alarm, clock + ahead + lease)
            taken.append(alarm)
        return taken

    async def record_alarm_failure(self, alarm: Alarm) -> bool:
        """Store a failed delivery's retry state, if that occurrence is still stored."""
        ident = (alarm.type, alarm.key, alarm.name)
        stored = self._alarms.get(ident)
        if stored is None or stored[0].scheduled_at != alarm.scheduled_at:
            return False
        self._alarms[ident] = (alarm, 0.0)
        return True

    # -- nodes and ownership (one process: the clock is this one's) --------------------------

    async def register_node(
        self, node_id: str, address: str | None, region: str | None, machine: str | None,
        process: NodeProcess | None = None,
    ) -> None:
        """Insert or refresh the node's row."""
        now = datetime.now(UTC)
        self._nodes[node_id] = NodeInfo(
            node_id, address, region, machine, now, now, True, 0, process
        )

    async def heartbeat(self, node_id: str) -> bool:
        """Stamp the heartbeat; ``False`` if the node is not registered or declared dead."""
        node = self._nodes.get(node_id)
        if node is None or node.declared_dead:
            return False
        self._nodes[node_id] = replace(node, heartbeat_at=datetime.now(UTC))
        return True

    async def declare_dead(self, node_id: str, process: NodeProcess) -> bool:
        """Mark a node proven dead, if it is still that process."""
        node = self._nodes.get(node_id)
        if node is None or node.process != process:
            return False
        self._nodes[node_id] = replace(node, heartbeat_at=DECLARED_DEAD)
        return True

    async def prune_nodes(self, dead_for: float) -> int:
        """Forget nodes dead for longer than ``dead_for`` seconds."""
        cutoff = datetime.now(UTC) - timedelta(seconds=dead_for)
        dead = [i for i, n in self._nodes.items() if n.heartbeat_at < cutoff]
        for node_id in dead:
            del self._nodes[node_id]
        for ident, (owner, _) in list(self._owners.items()):  # never committed, nobody's
            if ident not in self._checkpoints and (owner is None or owner not in self._nodes):
                del self._owners[ident]
        return len(dead)

    async def cluster_secret(self) -> str:
        """A secret of this storage's own (its nodes share one process)."""
        if self._secret is None:
            self._secret = secrets.token_hex(32)
        return self._secret

    async def deregister_node(self, node_id: str) -> None:
        """Release the node's objects and forget it."""
        for ident, (owner, epoch) in list(self._owners.items()):
            if owner == node_id:
                self._owners[ident] = (None, epoch)
        self._nodes.pop(node_id, None)

    async def nodes(self, ttl: float, count_owned: bool = True) -> list[NodeInfo]:
        """Every registered node, with liveness and the count of objects it owns."""
        cutoff = datetime.now(UTC) - timedelta(seconds=ttl)
        owned: dict[str, int] = {}
        for owner, _ in self._owners.values() if count_owned else ():
            if owner is not None:
                owned[owner] = owned.get(owner, 0) + 1
        return [
            replace(n, alive=n.heartbeat_at >= cutoff, owned=owned.get(n.node_id, 0))
            for _, n in sorted(self._nodes.items())
        ]

    async def claim(self, type: str, key: str, node_id: str, ttl: float) -> Claim:
        """Own ``(type, key)`` if it is free."""
        owner, epoch = self._owners.get((type, key), (None, 0))
        node = self._nodes.get(owner) if owner is not None else None
        alive = node is not None and node.heartbeat_at >= datetime.now(UTC) - timedelta(
            seconds=ttl
        )
        if owner is None or owner == node_id or not alive:
            self._owners[(type, key)] = (node_id, epoch + 1)
            taken_from = owner if owner is not None and owner != node_id else None
            return Claim(True, epoch + 1, node_id, taken_from=taken_from)
        return Claim(False, epoch, owner, node.address if node is not None else None)

    async def owners(self, idents: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The owning node of each object."""
        found = {}
        for ident in idents:
            pair = (ident[0], ident[1])
            owner = self._owners.get(pair, (None, 0))[0]
            if owner is not None:
                found[pair] = owner
        return found

    async def query(self, query: ObjectQuery) -> ObjectPage:
        """Filter and page through the stored checkpoints."""
        after = decode_cursor(query.cursor) if query.cursor is not None else None
        matches = []
        for ident in sorted(self._checkpoints):
            cp = self._checkpoints[ident]
            status = self._status(cp)
            if (
                (after is None or ident > after)
                and (query.type is None or cp.type == query.type)
                and (query.status is None or status == query.status)
                and (query.status_in is None or status in query.status_in)
                and (not query.key_prefix or cp.key.startswith(query.key_prefix))
                and (query.state_version is None or cp.state_version == query.state_version)
                and (query.updated_after is None or cp.updated_at > query.updated_after)
                and (query.updated_before is None or cp.updated_at < query.updated_before)
            ):
                matches.append(self._listed(cp))
                if len(matches) > query.limit:
                    break
        items = matches[: query.limit]
        more = len(matches) > query.limit
        return ObjectPage(items, encode_cursor(items[-1].type, items[-1].key) if more else None)

    async def stats(self) -> list[TypeStats]:
        """Count objects per type and status."""
        counts: dict[tuple[str, str], int] = {}
        for cp in self._checkpoints.values():
            status = self._status(cp)
            counts[(cp.type, status)] = counts.get((cp.type, status), 0) + 1
        return [TypeStats(t, s, n) for (t, s), n in sorted(counts.items())]

    async def delete(self, type: str, key: str) -> bool:
        """Forget the object, its journal and its alarms."""
        self._journal.pop((type, key), None)
        self._history.pop((type, key), None)
        for ident in [i for i in self._alarms if i[:2] == (type, key)]:
            del self._alarms[ident]
        return self._checkpoints.pop((type, key), None) is not None

    async def destroy(self, type: str, key: str, node_id: str, epoch: int) -> bool:
        """Forget everything of the object if ``node_id`` owns it at ``epoch``."""
        if self._owners.get((type, key)) != (node_id, epoch):
            return False
        del self._owners[(type, key)]
        await self.delete(type, key)
        return True

