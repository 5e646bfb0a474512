"""Alarms in SQL: written with the commits that set or complete them, polled by due time.

A commit's alarm writes apply only for the objects whose commit passed the fence, in the same
transaction: SQLite runs them in the batch's transaction; PostgreSQL, whose batch is otherwise
one statement outside a transaction, runs a batch that carries alarm writes and this module's
statements in one transaction on the writer's connection (batches without alarms keep their
single round trip).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic_core
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ._rows import alarm_of
from ._writes import _positional
from .base import Alarm, Commit

Ident = tuple[str, str]
_COLUMNS = ("type", "key", "name", "due_at", "scheduled_at", "payload", "every", "cron",
            "retry_count", "status", "last_error")


def alarm_writes(
    commits: Iterable[Commit], done: set[Ident]
) -> tuple[list[Alarm], list[tuple[str, str, str]]]:
    """The alarms to store and the ``(type, key, name)`` to delete, of the applied commits."""
    stores: list[Alarm] = []
    deletes: list[tuple[str, str, str]] = []
    for commit in commits:
        if not commit.alarms or (commit.type, commit.key) not in done:
            continue
        for write in commit.alarms:
            if write.alarm is None:
                deletes.append((commit.type, commit.key, write.name))
            else:
                stores.append(write.alarm)
    return stores, deletes


def _row(alarm: Alarm) -> dict[str, Any]:
    return {name: getattr(alarm, name) for name in _COLUMNS}


class SQLAlarms:
    """The statements over ``objects_alarms`` for one dialect."""

    def __init__(self, table: sa.Table, *, postgres: bool) -> None:
        self.table = table
        self.postgres = postgres
        self._insert = postgresql.insert if postgres else sqlite.insert
        if postgres:
            t = postgresql.dialect().identifier_preparer.format_table(table)  # type: ignore[no-untyped-call]
            texts, times = postgresql.ARRAY(sa.Text()), postgresql.ARRAY(sa.DateTime(timezone=True))
            upsert = sa.text(
                f"INSERT INTO {t} (type, key, name, due_at, scheduled_at, payload, every, cron, "
                "retry_count, status, last_error, claimed_until) "
                "SELECT v.type, v.key, v.name, v.due_at, v.scheduled_at, v.payload::jsonb, "
                "v.every, v.cron, v.retry_count, v.status, v.last_error, NULL FROM unnest("
                ":types, :keys, :names, :dues, :scheduled, :payloads, :everys, :crons, :retries, "
                ":statuses, :errors) AS v(type, key, name, due_at, scheduled_at, payload, every, "
                "cron, retry_count, status, last_error) "
                "ON CONFLICT (type, key, name) DO UPDATE SET due_at = excluded.due_at, "
                "scheduled_at = excluded.scheduled_at, payload = excluded.payload, "
                "every = excluded.every, cron = excluded.cron, "
                "retry_count = excluded.retry_count, status = excluded.status, "
                "last_error = excluded.last_error, claimed_until = NULL"
            ).bindparams(
                sa.bindparam("types", type_=texts), sa.bindparam("keys", type_=texts),
                sa.bindparam("names", type_=texts), sa.bindparam("dues", type_=times),
                sa.bindparam("scheduled", type_=times), sa.bindparam("payloads", type_=texts),
                sa.bindparam("everys", type_=postgresql.ARRAY(sa.Float())),
                sa.bindparam("crons", type_=texts),
                sa.bindparam("retries", type_=postgresql.ARRAY(sa.Integer())),
                sa.bindparam("statuses", type_=texts), sa.bindparam("errors", type_=texts),
            )
            delete = sa.text(
                f"DELETE FROM {t} a USING unnest(:types, :keys, :names) AS v(type, key, name) "
                "WHERE a.type = v.type AND a.key = v.key AND a.name = v.name"
            ).bindparams(
                sa.bindparam("types", type_=texts), sa.bindparam("keys", type_=texts),
                sa.bindparam("names", type_=texts),
            )
            self._pg_upsert = _positional(upsert)
            self._pg_delete = _positional(delete)

    # -- writes with a commit ------------------------------------------------------------------

    def write(
        self, conn: sa.Connection, stores: Sequence[Alarm], deletes: Sequence[tuple[str, ...]]
    ) -> None:
        """Apply alarm writes inside the batch's transaction (SQLAlchemy connection)."""
        a = self.table
        for t, k, n in deletes:
            conn.execute(sa.delete(a).where(a.c.type == t, a.c.key == k, a.c.name == n))
        for alarm in stores:
            values = {**_row(alarm), "claimed_until": None}
            stmt = self._insert(a).values(values)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=[a.c.type, a.c.key, a.c.name],
                set_={name: stmt.excluded[name] for name in (*_COLUMNS[3:], "claimed_until")},
            ))

    async def write_asyncpg(
        self, conn: Any, stores: Sequence[Alarm], deletes: Sequence[tuple[str, ...]]
    ) -> None:
        """Apply alarm writes on the PostgreSQL writer's raw connection (in its transaction)."""
        if deletes:
            sql, order = self._pg_delete
            gone = {"types": [d[0] for d in deletes], "keys": [d[1] for d in deletes],
                    "names": [d[2] for d in deletes]}
            await conn.execute(sql, *[gone[n] for n in order])
        if stores:
            sql, order = self._pg_upsert
            params: dict[str, list[Any]] = {
                "types": [s.type for s in stores], "keys": [s.key for s in stores],
                "names": [s.name for s in stores], "dues": [s.due_at for s in stores],
                "scheduled": [s.scheduled_at for s in stores],
                "payloads": [
                    None if s.payload is None else pydantic_core.to_json(s.payload).decode()
                    for s in stores
                ],
                "everys": [s.every for s in stores], "crons": [s.cron for s in stores],
                "retries": [s.retry_count for s in stores],
                "statuses": [s.status for s in stores], "errors": [s.last_error for s in stores],
            }
            await conn.execute(sql, *[params[n] for n in order])

    # -- reads and delivery --------------------------------------------------------------------

    def load_many(
        self, conn: sa.Connection, idents: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[Alarm]]:
        """The objects' alarms, each object's by name."""
        a = self.table
        rows = (
            conn.execute(
                sa.select(a)
                .where(sa.tuple_(a.c.type, a.c.key).in_([tuple(i) for i in idents]))
                .order_by(a.c.type, a.c.key, a.c.name)
            )
        ).all()
        found: dict[tuple[str, str], list[Alarm]] = {}
        for r in rows:
            found.setdefault((r.type, r.key), []).append(alarm_of(r._mapping))
        return found

    def claim_due(
        self, conn: sa.Connection, limit: int, lease: float, ahead: float = 0.0
    ) -> list[Alarm]:
        """Take up to ``limit`` untaken alarms due within ``ahead`` s, until ``ahead + lease``."""
        a = self.table
        now = datetime.now(UTC)
        due_by = now + timedelta(seconds=ahead)
        due = (
            sa.select(a.c.type, a.c.key, a.c.name)
            .where(
                a.c.status == "pending", a.c.due_at <= due_by,
                sa.or_(a.c.claimed_until.is_(None), a.c.claimed_until < now),
            )
            .order_by(a.c.due_at)
            .limit(limit)
        )
        if self.postgres:
            due = due.with_for_update(skip_locked=True)
        stmt = (
            sa.update(a)
            .where(sa.tuple_(a.c.type, a.c.key, a.c.name).in_(due))
            .values(claimed_until=due_by + timedelta(seconds=lease))
            .returning(*a.c)
        )
        return [alarm_of(r._mapping) for r in conn.execute(stmt).all()]

    def record_failure(self, conn: sa.Connection, alarm: Alarm) -> bool:
        """Store a failed delivery's retry state, if that occurrence is still stored."""
        a = self.table
        result = conn.execute(
            sa.update(a)
            .where(a.c.type == alarm.type, a.c.key == alarm.key, a.c.name == alarm.name,
                   a.c.scheduled_at == alarm.scheduled_at)
            .values(due_at=alarm.due_at, retry_count=alarm.retry_count, status=alarm.status,
                    last_error=alarm.last_error, claimed_until=None)
        )
        return bool(result.rowcount == 1)


