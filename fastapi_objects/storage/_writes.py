"""The statements of a group commit on PostgreSQL, and what both dialects share.

PostgreSQL gets one fixed statement whose rows travel as arrays (``unnest``): its text never
changes with the batch size, so SQLAlchemy compiles it once and asyncpg prepares it once per
connection (a ``VALUES`` list of N rows is a new statement for every N and cost ~17 ms of
compiling per batch of 64). SQLite's statements are in ``_writes_sqlite.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from .._exceptions import StorageUnavailable
from .base import Commit, StatusUpdate

Ident = tuple[str, str]
Then = Callable[[Any, set[tuple[str, str]]], Awaitable[None]]
_ATTEMPTS = 3  # runs of a statement PostgreSQL aborted to break a deadlock


def _entries(commits: Sequence[Commit]) -> Iterator[tuple[Commit, int, str, Any]]:
    """Each commit's journal entries with their revs (they end at ``journal_rev``)."""
    for c in commits:
        first = c.journal_rev - len(c.entries) + 1
        for i, (kind, payload) in enumerate(c.entries):
            yield c, first + i, kind, payload


def _text(value: bytes | None) -> str | None:
    """JSON text as the drivers bind it."""
    return None if value is None else value.decode()


class PostgresWrites:
    """A whole group commit as ONE statement, run outside an explicit transaction.

    A single statement is atomic by itself, so a batch costs one round trip instead of five
    (BEGIN, update, insert, journal, COMMIT). Its CTEs: ``f`` keeps the rows whose node still
    owns the object at their epoch (one primary-key probe of the owners each), ``upd`` applies
    them where ``rev`` is still the expected one (re-checked on the latest row version),
    ``ins`` creates objects, and the journal rows are inserted only for the objects that
    succeeded. Rows are sent in ``(type, key)`` order, so writers lock them in one order.
    """

    def __init__(
        self,
        checkpoints: sa.Table,
        journal: sa.Table,
        owners: sa.Table,
        connect: Callable[[], Awaitable[Any]],
    ) -> None:
        from asyncpg import exceptions  # type: ignore[import-untyped]  # PostgreSQL only

        self._connect = connect
        self._free: list[Any] = []  # idle asyncpg connections of the writer
        self._retry = (exceptions.DeadlockDetectedError, exceptions.SerializationError)
        cp = _qualified(checkpoints)
        j = _qualified(journal)
        o = _qualified(owners)
        # The ownership fence: a commit carrying an epoch applies only while its node still
        # owns the object at that epoch (a node that lost its lease cannot write). The owner
        # row is found by its primary key alone and node and epoch compared on it: with
        # node_id in the WHERE, cold statistics made PostgreSQL scan ix_objects_owners_node
        # (every object the node owns) once per row; with EXISTS, it hashed all of them.
        fence = (
            f"(v.epoch IS NULL OR (SELECT o.node_id = :node AND o.epoch = v.epoch FROM {o} o "
            "WHERE o.type = v.type AND o.key = v.key))"
        )
        text = postgresql.ARRAY(sa.Text())
        big = postgresql.ARRAY(sa.BigInteger())
        now = sa.bindparam("now", type_=sa.DateTime(timezone=True))
        self._commit = sa.text(
            "WITH v AS MATERIALIZED (SELECT * FROM unnest(:types, :keys, :expected, :new, "
            ":journal, :snapshot, :states, :versions, :epochs) AS v(type, key, expected_rev, "
            "new_rev, journal_rev, snapshot_rev, state, version, epoch)), "
            f"f AS MATERIALIZED (SELECT * FROM v WHERE {fence}), "
            f"upd AS (UPDATE {cp} c SET rev = f.new_rev, journal_rev = f.journal_rev, "
            "snapshot_rev = f.snapshot_rev, state = COALESCE(f.state::jsonb, c.state), "
            "state_version = COALESCE(f.version, c.state_version), "
            "updated_at = :now FROM f WHERE f.expected_rev <> 0 AND c.type = f.type "
            "AND c.key = f.key AND c.rev = f.expected_rev RETURNING c.type, c.key), "
            f"ins AS (INSERT INTO {cp} (type, key, rev, journal_rev, snapshot_rev, state, "
            "state_version, status, metadata, created_at, updated_at) "
            "SELECT f.type, f.key, f.new_rev, f.journal_rev, f.snapshot_rev, f.state::jsonb, "
            "f.version, 'active', '{}'::jsonb, :now, :now FROM f WHERE f.expected_rev = 0 "
            'ORDER BY f.type COLLATE "C", f.key COLLATE "C" '
            "ON CONFLICT DO NOTHING RETURNING type, key), "
            "ok AS (SELECT type, key FROM upd UNION ALL SELECT type, key FROM ins), "
            f"jr AS (INSERT INTO {j} (type, key, rev, kind, payload, at) "
            "SELECT e.type, e.key, e.rev, e.kind, e.payload::jsonb, :now "
            "FROM unnest(:jtypes, :jkeys, :jrevs, :jkinds, :jpayloads) "
            "AS e(type, key, rev, kind, payload) "
            "JOIN ok ON ok.type = e.type AND ok.key = e.key) "
            "SELECT type, key FROM ok"
        ).bindparams(
            sa.bindparam("types", type_=text), sa.bindparam("keys", type_=text),
            sa.bindparam("expected", type_=big), sa.bindparam("new", type_=big),
            sa.bindparam("journal", type_=big), sa.bindparam("snapshot", type_=big),
            sa.bindparam("states", type_=text),
            sa.bindparam("versions", type_=postgresql.ARRAY(sa.Integer())),
            sa.bindparam("jtypes", type_=text), sa.bindparam("jkeys", type_=text),
            sa.bindparam("jrevs", type_=big), sa.bindparam("jkinds", type_=text),
            sa.bindparam("jpayloads", type_=text),
            sa.bindparam("epochs", type_=big), sa.bindparam("node", type_=sa.Text()), now,
        )
        self._status = sa.text(
            "WITH v AS MATERIALIZED (SELECT * FROM unnest(:types, :keys, :statuses) "
            "AS v(type, key, status)), "
            f"locked AS MATERIALIZED (SELECT c.type, c.key FROM {cp} c JOIN v "
            "ON c.type = v.type AND c.key = v.key "
            'ORDER BY c.type COLLATE "C", c.key COLLATE "C" FOR UPDATE OF c) '
            f"UPDATE {cp} c SET status = v.status FROM v JOIN locked l "
            "ON l.type = v.type AND l.key = v.key WHERE c.type = v.type AND c.key = v.key"
        ).bindparams(
            sa.bindparam("types", type_=text), sa.bindparam("keys", type_=text),
            sa.bindparam("statuses", type_=text),
        )
        # A released object that was never committed leaves no owner row behind (a client
        # attaching to random keys must not grow the table for good); the others keep theirs
        # (its epoch), with no owner.
        self._release = sa.text(
            "WITH v AS MATERIALIZED (SELECT * FROM unnest(:types, :keys, :epochs) "
            "AS v(type, key, epoch)), "
            f"gone AS (DELETE FROM {o} o USING v WHERE o.type = v.type AND o.key = v.key "
            "AND o.node_id = :node AND o.epoch = v.epoch AND NOT EXISTS (SELECT 1 FROM "
            f"{cp} c WHERE c.type = o.type AND c.key = o.key) RETURNING o.type, o.key) "
            f"UPDATE {o} o SET node_id = NULL FROM v WHERE o.type = v.type AND o.key = v.key "
            "AND o.node_id = :node AND o.epoch = v.epoch AND NOT EXISTS "
            "(SELECT 1 FROM gone g WHERE g.type = o.type AND g.key = o.key)"
        ).bindparams(
            sa.bindparam("types", type_=text), sa.bindparam("keys", type_=text),
            sa.bindparam("epochs", type_=big), sa.bindparam("node", type_=sa.Text()),
        )
        self._release_sql, self._release_order = _positional(self._release)
        self._commit_sql, self._commit_order = _positional(self._commit)
        self._status_sql, self._status_order = _positional(self._status)

    async def commit(
        self, commits: Sequence[Commit], now: datetime, node_id: str | None,
        then: Then | None = None,
    ) -> set[Ident]:
        """Apply a batch; return the objects that succeeded.

        ``then(connection, succeeded)`` runs more statements (alarm writes) in the same
        transaction; without it the batch is one statement and one round trip.
        """
        commits = sorted(commits, key=_ident)  # one lock order for every writer
        entries = [
            (c.type, c.key, rev, kind, _text(payload))
            for c, rev, kind, payload in _entries(commits)
        ]
        rows = await self.run(self._commit_sql, self._commit_order, {
            "types": [c.type for c in commits], "keys": [c.key for c in commits],
            "expected": [c.expected_rev for c in commits], "new": [c.new_rev for c in commits],
            "journal": [c.journal_rev for c in commits],
            "snapshot": [c.snapshot_rev for c in commits],
            "states": [_text(c.state) for c in commits],
            "versions": [c.state_version for c in commits],
            "jtypes": [e[0] for e in entries], "jkeys": [e[1] for e in entries],
            "jrevs": [e[2] for e in entries], "jkinds": [e[3] for e in entries],
            "jpayloads": [e[4] for e in entries], "now": now,
            "epochs": [c.epoch for c in commits], "node": node_id,
        }, then)
        return {(r[0], r[1]) for r in rows}

    async def statuses(self, updates: Sequence[StatusUpdate]) -> None:
        """Write status hints (their own statement: a hint needs no atomicity with commits)."""
        await self.run(self._status_sql, self._status_order, {
            "types": [s.type for s in updates], "keys": [s.key for s in updates],
            "statuses": [s.status for s in updates],
        })

    async def release(self, node_id: str, items: Sequence[tuple[str, str, int]]) -> None:
        """Give up objects the node still owns at the given epochs (one statement)."""
        await self.run(self._release_sql, self._release_order, {
            "types": [i[0] for i in items], "keys": [i[1] for i in items],
            "epochs": [i[2] for i in items], "node": node_id,
        })

    async def run(
        self, sql: str, order: Sequence[str], params: dict[str, Any], then: Then | None = None
    ) -> list[Any]:
        """Run a fixed statement on one of the writer's own asyncpg connections.

        Commits, status hints and releases run here, and so do thaws (``_thaw_pg.py``). Not
        through SQLAlchemy's pool: its checkout, characteristics and return cost ~100 us of
        Python per statement, and under HTTP load a batch carries a few objects, so that was
        most of a durable call's CPU. Outside a transaction, one statement is atomic.
        """
        try:
            conn = self._free.pop() if self._free else await self._connect()
        except Exception as exc:
            raise StorageUnavailable.hiding("cannot connect to PostgreSQL", repr(exc)) from exc
        args = [params[n] for n in order]
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                if then is None:
                    result: list[Any] = await conn.fetch(sql, *args)
                else:
                    async with conn.transaction():
                        result = await conn.fetch(sql, *args)
                        await then(conn, {(r[0], r[1]) for r in result})
            except self._retry as exc:
                # Two writers sharing objects (a stale node beside the owner) can still meet
                # in opposite orders between the statement's parts; PostgreSQL picks one to
                # abort and nothing of it was applied: run it again.
                if attempt == _ATTEMPTS:
                    self._free.append(conn)
                    raise StorageUnavailable.hiding(
                        "PostgreSQL kept aborting the statement", repr(exc)
                    ) from exc
                await asyncio.sleep(0.005 * attempt)
            except BaseException as exc:
                conn.terminate()  # broken, or left mid-statement: never reuse it
                if isinstance(exc, Exception):
                    raise StorageUnavailable.hiding(
                        "PostgreSQL refused or lost the statement", repr(exc)
                    ) from exc
                raise
            else:
                self._free.append(conn)
                return result
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close the writer's connections."""
        free, self._free = self._free, []
        for conn in free:
            await conn.close()


def _positional(stmt: sa.TextClause) -> tuple[str, tuple[str, ...]]:
    compiled = stmt.compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
    return compiled.string, tuple(compiled.positiontup or ())


def _ident(item: Commit | StatusUpdate) -> Ident:
    return (item.type, item.key)


def _qualified(table: sa.Table) -> str:
    preparer = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]
    return preparer.format_table(table)
