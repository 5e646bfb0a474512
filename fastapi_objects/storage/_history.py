"""Kept states in SQL (storage version 5): written with their commits, read for restore, pruned.

A commit whose class keeps history (``Commit.history``) and that wrote a state adds a row
``(type, key, rev, state, state_version, at)``, only if the commit applied: on SQLite in the
batch's transaction (``_writes_sqlite.py``); on PostgreSQL, whose batch is otherwise one
statement outside a transaction, in the alarm-style transaction on the writer's connection
(``write_asyncpg``). Batches without such commits keep their single round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ._rows import to_utc, utc
from ._writes import _positional, _text
from .base import Commit, KeptState

Ident = tuple[str, str]

SQLITE_INSERT = (
    "INSERT INTO objects_history (type, key, rev, state, state_version, at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (type, key, rev) DO UPDATE SET "
    "state = excluded.state, state_version = excluded.state_version, at = excluded.at"
)
"""SQLite's insert of one kept state (an object deleted and made again reuses its revs)."""


def kept(commits: Sequence[Commit], done: set[Ident]) -> list[Commit]:
    """The applied commits whose states are to be kept."""
    return [
        c for c in commits
        if c.history and c.state is not None and (c.type, c.key) in done
    ]


class SQLHistory:
    """The statements over ``objects_history`` for one dialect."""

    def __init__(self, table: sa.Table, *, postgres: bool) -> None:
        self.table = table
        if postgres:
            h = postgresql.dialect().identifier_preparer.format_table(table)  # type: ignore[no-untyped-call]
            texts = postgresql.ARRAY(sa.Text())
            insert = sa.text(
                f"INSERT INTO {h} (type, key, rev, state, state_version, at) "
                "SELECT v.type, v.key, v.rev, v.state::jsonb, v.version, :now "
                "FROM unnest(:types, :keys, :revs, :states, :versions) "
                "AS v(type, key, rev, state, version) "
                "ON CONFLICT (type, key, rev) DO UPDATE SET state = excluded.state, "
                "state_version = excluded.state_version, at = excluded.at"
            ).bindparams(
                sa.bindparam("types", type_=texts), sa.bindparam("keys", type_=texts),
                sa.bindparam("revs", type_=postgresql.ARRAY(sa.BigInteger())),
                sa.bindparam("states", type_=texts),
                sa.bindparam("versions", type_=postgresql.ARRAY(sa.Integer())),
                sa.bindparam("now", type_=sa.DateTime(timezone=True)),
            )
            self._pg_insert = _positional(insert)

    async def write_asyncpg(
        self, conn: Any, commits: Sequence[Commit], done: set[Ident], now: datetime
    ) -> None:
        """Keep the states of the applied commits (PostgreSQL writer, in its transaction)."""
        rows = kept(commits, done)
        if not rows:
            return
        sql, order = self._pg_insert
        params: dict[str, Any] = {
            "types": [c.type for c in rows], "keys": [c.key for c in rows],
            "revs": [c.new_rev for c in rows], "states": [_text(c.state) for c in rows],
            "versions": [c.state_version for c in rows], "now": now,
        }
        await conn.execute(sql, *[params[n] for n in order])

    # -- reads ---------------------------------------------------------------------------------

    def list(
        self, conn: sa.Connection, type: str, key: str, before_rev: int | None, limit: int
    ) -> list[KeptState]:
        """The object's kept states, newest first, without the states."""
        h = self.table
        stmt = (
            sa.select(h.c.rev, h.c.at, h.c.state_version)
            .where(h.c.type == type, h.c.key == key)
            .order_by(h.c.rev.desc())
            .limit(limit)
        )
        if before_rev is not None:
            stmt = stmt.where(h.c.rev < before_rev)
        return [KeptState(r.rev, utc(r.at), r.state_version) for r in conn.execute(stmt)]

    def find(
        self, conn: sa.Connection, type: str, key: str, rev: int | None, at: datetime | None
    ) -> KeptState | None:
        """The newest kept state at or before ``rev`` (or ``at``), with its state."""
        h = self.table
        stmt = (
            sa.select(h.c.rev, h.c.at, h.c.state_version, h.c.state)
            .where(h.c.type == type, h.c.key == key)
            .order_by(h.c.rev.desc())
            .limit(1)
        )
        if rev is not None:
            stmt = stmt.where(h.c.rev <= rev)
        if at is not None:
            stmt = stmt.where(h.c.at <= to_utc(at))
        row = conn.execute(stmt).first()
        return None if row is None else KeptState(row.rev, utc(row.at), row.state_version,
                                                  row.state)

    # -- pruning -------------------------------------------------------------------------------

    def prune(self, conn: sa.Connection, type: str, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` kept states older than ``before``, but each object's newest."""
        h = self.table
        old, newer = h.alias("old"), h.alias("newer")
        before = to_utc(before)
        superseded = sa.exists().where(
            newer.c.type == old.c.type, newer.c.key == old.c.key, newer.c.rev > old.c.rev,
            newer.c.at < before,
        )
        doomed = (
            sa.select(old.c.type, old.c.key, old.c.rev)
            .where(old.c.type == type, old.c.at < before, superseded)
            .limit(limit)
        )
        result = conn.execute(
            sa.delete(h).where(sa.tuple_(h.c.type, h.c.key, h.c.rev).in_(doomed))
        )
        return int(result.rowcount)
