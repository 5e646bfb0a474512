"""The group commit on SQLite: a whole batch in a few fixed statements, in the writer's thread.

Each part of a batch is ONE statement over the rows of a JSON array (``json_each``): the
fenced updates, the creations, the journal, status hints and releases. SQLite parses the
array in C; the statement text never changes, so ``sqlite3`` prepares it once. The statements
report how many rows they changed: when every row applied (the common case) nothing more is
read; otherwise the batch is rolled back and run again with ``RETURNING``, to learn which
objects were fenced out (each returned row costs a step of the driver, and with it a handover
of the GIL to a busy event loop).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pydantic_core
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from ._alarms import SQLAlarms, alarm_writes
from ._writes import Ident, _entries
from .base import Commit, StatusUpdate

_V = (
    "SELECT value ->> 0 AS type, value ->> 1 AS key, value ->> 2 AS expected_rev, "
    "value ->> 3 AS new_rev, value ->> 4 AS journal_rev, value ->> 5 AS snapshot_rev, "
    "value ->> 6 AS state, value ->> 7 AS version, value ->> 8 AS epoch FROM json_each(?1)"
)
# The ownership fence: a commit carrying an epoch applies only while its node (?2) still owns
# the object at that epoch.
_FENCE = (
    "(v.epoch IS NULL OR EXISTS (SELECT 1 FROM objects_owners o WHERE o.type = v.type "
    "AND o.key = v.key AND o.node_id = ?2 AND o.epoch = v.epoch))"
)
_UPDATE = (
    "UPDATE objects_checkpoints AS c SET rev = v.new_rev, journal_rev = v.journal_rev, "
    "snapshot_rev = v.snapshot_rev, state = coalesce(v.state, c.state), "
    "state_version = coalesce(v.version, c.state_version), status = 'active', "
    f"updated_at = ?3 FROM ({_V}) AS v WHERE c.type = v.type AND c.key = v.key "
    f"AND c.rev = v.expected_rev AND {_FENCE}"
)
# WHERE: SQLite parses an upsert from a SELECT only with one.
_INSERT = (
    "INSERT INTO objects_checkpoints (type, key, rev, journal_rev, snapshot_rev, state, "
    "state_version, status, metadata, created_at, updated_at) "
    "SELECT v.type, v.key, v.new_rev, v.journal_rev, v.snapshot_rev, v.state, v.version, "
    f"'active', '{{}}', ?3, ?3 FROM ({_V}) AS v WHERE {_FENCE} ON CONFLICT DO NOTHING"
)
_JOURNAL = (
    "INSERT INTO objects_journal (type, key, rev, kind, payload, at) "
    "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, ?2 "
    "FROM json_each(?1)"
)
_STATUS = (
    "UPDATE objects_checkpoints AS c SET status = v.status FROM (SELECT value ->> 0 AS type, "
    "value ->> 1 AS key, value ->> 2 AS status FROM json_each(?1)) AS v "
    "WHERE c.type = v.type AND c.key = v.key"
)
_RELEASE = (
    "UPDATE objects_owners AS o SET node_id = NULL FROM (SELECT value ->> 0 AS type, "
    "value ->> 1 AS key, value ->> 2 AS epoch FROM json_each(?1)) AS v "
    "WHERE o.type = v.type AND o.key = v.key AND o.node_id = ?2 AND o.epoch = v.epoch"
)
_RETURNING = " RETURNING type, key"


def _json(value: Any) -> str | None:
    return None if value is None else pydantic_core.to_json(value).decode()


class _Retry(Exception):
    """Some row of the batch did not apply: run it again, finding out which."""


class SQLiteWrites:
    """The statements of a group commit on SQLite (one writer: no lock ordering needed)."""

    def __init__(self, alarms: SQLAlarms) -> None:
        self.alarms = alarms
        dialect = sqlite.dialect()
        # Times are stored as SQLAlchemy stores them, so that its reads parse them back.
        self._stamp = sa.DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)

    def commit(
        self, conn: sa.Connection, commits: Sequence[Commit], statuses: Sequence[StatusUpdate],
        releases: Sequence[tuple[str, str, int]], node_id: str | None, now: datetime,
    ) -> set[Ident]:
        """Apply a batch inside the writer's transaction; return the objects that succeeded."""
        raw = conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        stamp = self._stamp(now) if self._stamp is not None else now
        creates = _rows([c for c in commits if c.expected_rev == 0], node_id)
        updates = _rows([c for c in commits if c.expected_rev != 0], node_id)
        raw.execute("SAVEPOINT batch")
        try:
            done = self._apply(raw, creates, updates, node_id, stamp, exact=False)
        except _Retry:
            raw.execute("ROLLBACK TO batch")
            done = self._apply(raw, creates, updates, node_id, stamp, exact=True)
        raw.execute("RELEASE batch")
        entries = [
            [c.type, c.key, rev, kind, _json(payload)]
            for c, rev, kind, payload in _entries(commits)
            if (c.type, c.key) in done
        ]
        if entries:
            raw.execute(_JOURNAL, (_json(entries), stamp))
        stores, deletes = alarm_writes(commits, done)
        if stores or deletes:
            self.alarms.write(conn, stores, deletes)
        if statuses:
            raw.execute(_STATUS, (_json([[s.type, s.key, s.status] for s in statuses]),))
        if releases and node_id is not None:
            raw.execute(_RELEASE, (_json([list(r) for r in releases]), node_id))
        return done

    @staticmethod
    def _apply(
        raw: sqlite3.Connection, creates: list[list[Any]], updates: list[list[Any]],
        node_id: str | None, stamp: Any, *, exact: bool,
    ) -> set[Ident]:
        done: set[Ident] = set()
        for sql, rows in ((_INSERT, creates), (_UPDATE, updates)):
            if not rows:
                continue
            params = (_json(rows), node_id, stamp)
            if exact:
                done.update((r[0], r[1]) for r in raw.execute(sql + _RETURNING, params))
            elif raw.execute(sql, params).rowcount != len(rows):
                raise _Retry
            else:
                done.update((r[0], r[1]) for r in rows)
        return done


def _rows(commits: Sequence[Commit], node_id: str | None) -> list[list[Any]]:
    return [
        [c.type, c.key, c.expected_rev, c.new_rev, c.journal_rev, c.snapshot_rev,
         _json(c.state), c.state_version, c.epoch if node_id is not None else None]
        for c in commits
    ]
