"""The group commit on SQLite: per-object statements in the batch's transaction.

SQLite runs in-process: one cached statement per object costs microseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ._owners import SQLOwners
from ._writes import Ident, _entries
from .base import Commit, StatusUpdate


class SQLiteWrites:
    """Per-object statements for SQLite (a single writer: no lock ordering needed).

    The ownership fence is part of each statement, never a read before it: SQLite then takes
    its write lock at the batch's first statement and every check sees the latest rows.
    """

    def __init__(self, checkpoints: sa.Table, journal: sa.Table, owners: SQLOwners) -> None:
        self.cp = checkpoints
        self.journal_table = journal
        self.owners = owners

    async def commit(
        self, conn: AsyncConnection, commits: Sequence[Commit], now: datetime,
        node_id: str | None,
    ) -> set[Ident]:
        """Apply a batch (``conn`` inside a transaction); return the objects that succeeded."""
        creates = [c for c in commits if c.expected_rev == 0]
        updates = [c for c in commits if c.expected_rev != 0]
        done = await self.insert(conn, creates, now, node_id)
        done |= await self.update(conn, updates, now, node_id)
        rows = [
            {"type": c.type, "key": c.key, "rev": rev, "kind": kind, "payload": payload, "at": now}
            for c, rev, kind, payload in _entries(commits)
            if (c.type, c.key) in done
        ]
        if rows:
            await self.journal(conn, rows)
        return done

    async def insert(
        self, conn: AsyncConnection, commits: Sequence[Commit], now: datetime,
        node_id: str | None,
    ) -> set[Ident]:
        """Create objects one statement each; skip the ones that exist or are not ours."""
        cp = self.cp
        created = set()
        for c in commits:
            values: dict[str, Any] = {
                "type": c.type, "key": c.key, "rev": c.new_rev, "journal_rev": c.journal_rev,
                "snapshot_rev": c.snapshot_rev, "state": c.state,
                "state_version": c.state_version, "status": "active", "metadata": {},
                "created_at": now, "updated_at": now,
            }
            if c.epoch is None or node_id is None:
                stmt = sqlite.insert(cp).values(values).on_conflict_do_nothing()
            else:
                row = sa.select(
                    *(sa.literal(v, cp.c[name].type).label(name) for name, v in values.items())
                ).where(self.owners.fence(c.type, c.key, c.epoch, node_id))
                stmt = (
                    sqlite.insert(cp).from_select(list(values), row).on_conflict_do_nothing()
                )
            if (await conn.execute(stmt)).rowcount == 1:
                created.add((c.type, c.key))
        return created

    async def update(
        self, conn: AsyncConnection, commits: Sequence[Commit], now: datetime,
        node_id: str | None,
    ) -> set[Ident]:
        """Apply fenced updates one statement each."""
        cp = self.cp
        updated = set()
        for c in commits:
            values: dict[str, Any] = {
                "rev": c.new_rev, "journal_rev": c.journal_rev, "snapshot_rev": c.snapshot_rev,
                "status": "active", "updated_at": now,
            }
            if c.state is not None:
                values["state"] = c.state
                values["state_version"] = c.state_version
            stmt = (
                sa.update(cp)
                .where(cp.c.type == c.type, cp.c.key == c.key, cp.c.rev == c.expected_rev)
                .values(values)
            )
            if c.epoch is not None and node_id is not None:
                stmt = stmt.where(self.owners.fence(c.type, c.key, c.epoch, node_id))
            if (await conn.execute(stmt)).rowcount == 1:
                updated.add((c.type, c.key))
        return updated

    async def journal(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
        """Append journal entries (executemany)."""
        await conn.execute(sa.insert(self.journal_table), list(rows))

    async def statuses(self, conn: AsyncConnection, updates: Sequence[StatusUpdate]) -> None:
        """Write status hints (executemany)."""
        cp = self.cp
        stmt = (
            sa.update(cp)
            .where(cp.c.type == sa.bindparam("t"), cp.c.key == sa.bindparam("k"))
            .values(status=sa.bindparam("s"))
        )
        await conn.execute(stmt, [{"t": s.type, "k": s.key, "s": s.status} for s in updates])
