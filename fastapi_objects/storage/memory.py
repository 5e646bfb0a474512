"""In-memory storage: same contract as SQL, nothing survives the process. For tests and demos."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from .base import (
    Checkpoint,
    Commit,
    JournalEntry,
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

    async def create_tables(self) -> None:
        """Nothing to create."""

    async def load(self, type: str, key: str) -> Checkpoint | None:
        """Return a copy of the checkpoint or ``None``."""
        return copy.deepcopy(self._checkpoints.get((type, key)))

    async def read_journal(
        self, type: str, key: str, after_rev: int = 0, limit: int | None = None
    ) -> list[JournalEntry]:
        """Return journal entries after ``after_rev``."""
        entries = [e for e in self._journal.get((type, key), []) if e.rev > after_rev]
        return copy.deepcopy(entries[:limit] if limit is not None else entries)

    async def commit(
        self, commits: Sequence[Commit], statuses: Sequence[StatusUpdate] = ()
    ) -> list[bool]:
        """Apply the commits whose ``expected_rev`` matches."""
        now = datetime.now(UTC)
        result = []
        for c in commits:
            ident = (c.type, c.key)
            old = self._checkpoints.get(ident)
            if (old.rev if old else 0) != c.expected_rev:
                result.append(False)
                continue
            state = copy.deepcopy(c.state) if c.state is not None else old.state if old else None
            version = c.state_version if c.state_version is not None else (
                old.state_version if old else 0
            )
            self._checkpoints[ident] = Checkpoint(
                type=c.type, key=c.key, rev=c.new_rev, journal_rev=c.journal_rev,
                snapshot_rev=c.snapshot_rev, state=state, state_version=version,
                status="active", metadata=old.metadata if old else {},
                created_at=old.created_at if old else now, updated_at=now,
            )
            first = c.journal_rev - len(c.entries) + 1
            self._journal.setdefault(ident, []).extend(
                JournalEntry(first + i, kind, copy.deepcopy(payload), now)
                for i, (kind, payload) in enumerate(c.entries)
            )
            result.append(True)
        for s in statuses:
            old = self._checkpoints.get((s.type, s.key))
            if old is not None:
                self._checkpoints[(s.type, s.key)] = replace(old, status=s.status)
        return result

    async def query(self, query: ObjectQuery) -> ObjectPage:
        """Filter and page through the stored checkpoints."""
        after = decode_cursor(query.cursor) if query.cursor is not None else None
        matches = []
        for ident in sorted(self._checkpoints):
            cp = self._checkpoints[ident]
            if (
                (after is None or ident > after)
                and (query.type is None or cp.type == query.type)
                and (query.status is None or cp.status == query.status)
                and (query.status_in is None or cp.status in query.status_in)
                and (not query.key_prefix or cp.key.startswith(query.key_prefix))
                and (query.state_version is None or cp.state_version == query.state_version)
                and (query.updated_after is None or cp.updated_at > query.updated_after)
                and (query.updated_before is None or cp.updated_at < query.updated_before)
            ):
                matches.append(copy.deepcopy(cp))
                if len(matches) > query.limit:
                    break
        items = matches[: query.limit]
        more = len(matches) > query.limit
        return ObjectPage(items, encode_cursor(items[-1].type, items[-1].key) if more else None)

    async def stats(self) -> list[TypeStats]:
        """Count objects per type and status."""
        counts: dict[tuple[str, str], int] = {}
        for cp in self._checkpoints.values():
            counts[(cp.type, cp.status)] = counts.get((cp.type, cp.status), 0) + 1
        return [TypeStats(t, s, n) for (t, s), n in sorted(counts.items())]

    async def delete(self, type: str, key: str) -> bool:
        """Forget the object and its journal."""
        self._journal.pop((type, key), None)
        return self._checkpoints.pop((type, key), None) is not None

