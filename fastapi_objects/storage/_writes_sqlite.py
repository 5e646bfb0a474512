"""The group commit on SQLite: a whole batch in a few fixed statements, in the writer's thread.

Each part of a batch is one ``executemany`` of a fixed statement: the fenced updates, the
creations, the journal, status hints and releases. (One statement over the rows of a JSON
array, ``json_each``, was twice as slow: SQLite parsed the array once per extracted field.)
``executemany`` reports how many rows changed: when every row applied (the common case)
nothing more is asked; otherwise the batch is rolled back and run again a row at a time, to
learn which objects were fenced out.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from ._alarms import SQLAlarms, alarm_writes
from ._history import SQLITE_INSERT as _HISTORY
from ._history import kept
from ._writes import Ident, _entries, _text
from .base import Commit, StatusUpdate

# Parameters: ?1 type, ?2 key, ?3 expected rev, ?4 new rev, ?5 journal rev, ?6 snapshot rev,
# ?7 state, ?8 state version, ?9 epoch, ?10 node, ?11 time. The ownership fence: a commit
# carrying an epoch applies only while its node still owns the object at that epoch.
_FENCE = (
    "(?9 IS NULL OR EXISTS (SELECT 1 FROM objects_owners o WHERE o.type = ?1 AND o.key = ?2 "
    "AND o.node_id = ?10 AND o.epoch = ?9))"
)
_UPDATE = (
    "UPDATE objects_checkpoints SET rev = ?4, journal_rev = ?5, snapshot_rev = ?6, "
    "state = coalesce(?7, state), state_version = coalesce(?8, state_version), "
    f"updated_at = ?11 WHERE type = ?1 AND key = ?2 AND rev = ?3 AND {_FENCE}"
)
# WHERE: SQLite parses an upsert from a SELECT only with one.
_INSERT = (
    "INSERT INTO objects_checkpoints (type, key, rev, journal_rev, snapshot_rev, state, "
    "state_version, status, metadata, created_at, updated_at) "
    "SELECT ?1, ?2, ?4, ?5, ?6, ?7, ?8, 'active', '{}', ?11, ?11 "
    f"WHERE ?3 = 0 AND {_FENCE} ON CONFLICT DO NOTHING"
)
_JOURNAL = (
    "INSERT INTO objects_journal (type, key, rev, kind, payload, at) VALUES (?, ?, ?, ?, ?, ?)"
)
_STATUS = "UPDATE objects_checkpoints SET status = ?3 WHERE type = ?1 AND key = ?2"
# A released object that was never committed leaves no owner row behind; the others keep
# theirs (its epoch), with no owner.
_FORGET = (
    "DELETE FROM objects_owners WHERE type = ?1 AND key = ?2 AND epoch = ?3 AND node_id = ?4 "
    "AND NOT EXISTS (SELECT 1 FROM objects_checkpoints c WHERE c.type = ?1 AND c.key = ?2)"
)
_RELEASE = (
    "UPDATE objects_owners SET node_id = NULL "
    "WHERE type = ?1 AND key = ?2 AND epoch = ?3 AND node_id = ?4"
)


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
        creates = _rows([c for c in commits if c.expected_rev == 0], node_id, stamp)
        updates = _rows([c for c in commits if c.expected_rev != 0], node_id, stamp)
        if (
            (creates and raw.executemany(_INSERT, creates).rowcount != len(creates))
            or (updates and raw.executemany(_UPDATE, updates).rowcount != len(updates))
        ):
            # Some object was fenced out: run the batch again a row at a time to learn which.
            raw.execute("ROLLBACK")
            raw.execute("BEGIN IMMEDIATE")
            done = {
                (row[0], row[1]) for sql, rows in ((_INSERT, creates), (_UPDATE, updates))
                for row in rows if raw.execute(sql, row).rowcount == 1
            }
        else:
            done = {(c.type, c.key) for c in commits}
        entries = [
            (c.type, c.key, rev, kind, _text(payload), stamp)
            for c, rev, kind, payload in _entries(commits)
            if (c.type, c.key) in done
        ]
        if entries:
            raw.executemany(_JOURNAL, entries)
        history = [
            (c.type, c.key, c.new_rev, _text(c.state), c.state_version, stamp)
            for c in kept(commits, done)
        ]
        if history:
            raw.executemany(_HISTORY, history)
        stores, deletes = alarm_writes(commits, done)
        if stores or deletes:
            self.alarms.write(conn, stores, deletes)
        if statuses:
            raw.executemany(_STATUS, [(s.type, s.key, s.status) for s in statuses])
        if releases and node_id is not None:
            released = [(*r, node_id) for r in releases]
            raw.executemany(_FORGET, released)
            raw.executemany(_RELEASE, released)
        return done


def _rows(commits: Sequence[Commit], node_id: str | None, stamp: Any) -> list[tuple[Any, ...]]:
    return [
        (c.type, c.key, c.expected_rev, c.new_rev, c.journal_rev, c.snapshot_rev,
         _text(c.state), c.state_version, c.epoch if node_id is not None else None, node_id,
         stamp)
        for c in commits
    ]
