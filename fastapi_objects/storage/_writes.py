"""The statements of a group commit, per dialect.

PostgreSQL gets one fixed statement per step whose rows travel as arrays (``unnest``): the
statement text never changes with the batch size, so SQLAlchemy compiles it once and asyncpg
prepares it once per connection. (A ``VALUES`` list of N rows is a new statement for every N
and cost ~17 ms of compiling per batch of 64.) SQLite runs in-process: one cached statement
per object costs microseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pydantic_core
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from .base import Commit, StatusUpdate

Ident = tuple[str, str]


def _json(value: Any) -> str | None:
    return None if value is None else pydantic_core.to_json(value).decode()


class PostgresWrites:
    """Batch statements for PostgreSQL."""

    def __init__(self, checkpoints: sa.Table, journal: sa.Table) -> None:
        cp = _qualified(checkpoints)
        j = _qualified(journal)
        text = postgresql.ARRAY(sa.Text())
        big = postgresql.ARRAY(sa.BigInteger())
        self._lock = sa.text(
            f"SELECT 1 FROM {cp} c JOIN unnest(:types, :keys) AS v(type, key) "
            "ON c.type = v.type AND c.key = v.key "
            'ORDER BY c.type COLLATE "C", c.key COLLATE "C" FOR UPDATE OF c'
        ).bindparams(sa.bindparam("types", type_=text), sa.bindparam("keys", type_=text))
        rows = (
            "unnest(:types, :keys, :expected, :new, :journal, :snapshot, :states, :versions) "
            "AS v(type, key, expected_rev, new_rev, journal_rev, snapshot_rev, state, version)"
        )
        params = [
            sa.bindparam("types", type_=text), sa.bindparam("keys", type_=text),
            sa.bindparam("expected", type_=big), sa.bindparam("new", type_=big),
            sa.bindparam("journal", type_=big), sa.bindparam("snapshot", type_=big),
            sa.bindparam("states", type_=text),
            sa.bindparam("versions", type_=postgresql.ARRAY(sa.Integer())),
            sa.bindparam("now", type_=sa.DateTime(timezone=True)),
        ]
        self._insert = sa.text(
            f"INSERT INTO {cp} (type, key, rev, journal_rev, snapshot_rev, state, state_version, "
            "status, metadata, created_at, updated_at) "
            "SELECT v.type, v.key, v.new_rev, v.journal_rev, v.snapshot_rev, v.state::jsonb, "
            f"v.version, 'active', '{{}}'::jsonb, :now, :now FROM {rows} "
            "ON CONFLICT DO NOTHING RETURNING type, key"
        ).bindparams(*params)
        self._update = sa.text(
            f"UPDATE {cp} c SET rev = v.new_rev, journal_rev = v.journal_rev, "
            "snapshot_rev = v.snapshot_rev, state = COALESCE(v.state::jsonb, c.state), "
            "state_version = COALESCE(v.version, c.state_version), status = 'active', "
            f"updated_at = :now FROM {rows} "
            "WHERE c.type = v.type AND c.key = v.key AND c.rev = v.expected_rev "
            "RETURNING c.type, c.key"
        ).bindparams(*params)
        self._journal = sa.text(
            f"INSERT INTO {j} (type, key, rev, kind, payload, at) "
            "SELECT v.type, v.key, v.rev, v.kind, v.payload::jsonb, :now "
            "FROM unnest(:types, :keys, :revs, :kinds, :payloads) "
            "AS v(type, key, rev, kind, payload)"
        ).bindparams(
            sa.bindparam("types", type_=text), sa.bindparam("keys", type_=text),
            sa.bindparam("revs", type_=big), sa.bindparam("kinds", type_=text),
            sa.bindparam("payloads", type_=text),
            sa.bindparam("now", type_=sa.DateTime(timezone=True)),
        )
        self._status = sa.text(
            f"UPDATE {cp} c SET status = v.status "
            "FROM unnest(:types, :keys, :statuses) AS v(type, key, status) "
            "WHERE c.type = v.type AND c.key = v.key"
        ).bindparams(
            sa.bindparam("types", type_=text), sa.bindparam("keys", type_=text),
            sa.bindparam("statuses", type_=text),
        )

    async def lock(self, conn: AsyncConnection, idents: Sequence[Ident]) -> None:
        """Lock the rows a batch changes in one global order (no deadlock between writers)."""
        if idents:
            await conn.execute(
                self._lock, {"types": [i[0] for i in idents], "keys": [i[1] for i in idents]}
            )

    async def insert(
        self, conn: AsyncConnection, commits: Sequence[Commit], now: datetime
    ) -> set[Ident]:
        """Create objects; return the ones created (others already existed)."""
        result = await conn.execute(self._insert, self._rows(commits, now))
        return {(r[0], r[1]) for r in result}

    async def update(
        self, conn: AsyncConnection, commits: Sequence[Commit], now: datetime
    ) -> set[Ident]:
        """Apply fenced updates; return the ones whose ``expected_rev`` matched."""
        result = await conn.execute(self._update, self._rows(commits, now))
        return {(r[0], r[1]) for r in result}

    async def journal(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
        """Append journal entries."""
        await conn.execute(self._journal, {
            "types": [r["type"] for r in rows], "keys": [r["key"] for r in rows],
            "revs": [r["rev"] for r in rows], "kinds": [r["kind"] for r in rows],
            "payloads": [_json(r["payload"]) for r in rows], "now": rows[0]["at"],
        })

    async def statuses(self, conn: AsyncConnection, updates: Sequence[StatusUpdate]) -> None:
        """Write status hints."""
        await conn.execute(self._status, {
            "types": [s.type for s in updates], "keys": [s.key for s in updates],
            "statuses": [s.status for s in updates],
        })

    @staticmethod
    def _rows(commits: Sequence[Commit], now: datetime) -> dict[str, Any]:
        return {
            "types": [c.type for c in commits], "keys": [c.key for c in commits],
            "expected": [c.expected_rev for c in commits], "new": [c.new_rev for c in commits],
            "journal": [c.journal_rev for c in commits],
            "snapshot": [c.snapshot_rev for c in commits],
            "states": [_json(c.state) for c in commits],
            "versions": [c.state_version for c in commits], "now": now,
        }


class SQLiteWrites:
    """Per-object statements for SQLite (a single writer: no lock ordering needed)."""

    def __init__(self, checkpoints: sa.Table, journal: sa.Table) -> None:
        self.cp = checkpoints
        self.journal_table = journal

    async def lock(self, conn: AsyncConnection, idents: Sequence[Ident]) -> None:
        """SQLite serializes writers per database: nothing to order."""

    async def insert(
        self, conn: AsyncConnection, commits: Sequence[Commit], now: datetime
    ) -> set[Ident]:
        """Create objects one statement each; skip the ones that exist."""
        cp = self.cp
        created = set()
        for c in commits:
            stmt = (
                sa.dialects.sqlite.insert(cp)
                .values(
                    type=c.type, key=c.key, rev=c.new_rev, journal_rev=c.journal_rev,
                    snapshot_rev=c.snapshot_rev, state=c.state, state_version=c.state_version,
                    status="active", metadata={}, created_at=now, updated_at=now,
                )
                .on_conflict_do_nothing()
            )
            if (await conn.execute(stmt)).rowcount == 1:
                created.add((c.type, c.key))
        return created

    async def update(
        self, conn: AsyncConnection, commits: Sequence[Commit], now: datetime
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


def _qualified(table: sa.Table) -> str:
    preparer = postgresql.dialect().identifier_preparer
    return preparer.format_table(table)
