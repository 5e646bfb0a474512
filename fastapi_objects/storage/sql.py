"""SQL storage on SQLAlchemy 2 async Core: SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from pydantic_core import from_json
from sqlalchemy.ext.asyncio import AsyncEngine

from .._exceptions import StorageUnavailable
from ._alarms import SQLAlarms, alarm_writes
from ._cluster import cluster_secret
from ._history import SQLHistory
from ._listing import SQLListing
from ._owners import SQLOwners
from ._rows import checkpoint_of, utc
from ._sqlite import SQLiteWorker
from ._thaw_pg import PostgresThaw
from ._writes import PostgresWrites, _ident
from ._writes_sqlite import SQLiteWrites
from .base import (
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
    Thawed,
    TypeStats,
    encode_cursor,
)
from .engine import create_engine, engine_options
from .tables import add_missing_columns, storage_metadata
from .urls import redact

R = TypeVar("R")

class SQLStorage(Storage):
    """Storage in SQLite or PostgreSQL; one transaction per group commit.

    PostgreSQL runs on SQLAlchemy's async engine (asyncpg), its group commits and thaws on
    the writer's own asyncpg connections (``_writes.py``, ``_thaw_pg.py``). SQLite runs on two
    ``sqlite3`` connections of its own, each in a thread: every write of the process through
    the one writer, reads through a reader that never takes the write lock (``_sqlite.py``).
    The statements of both are plain functions of a SQLAlchemy ``Connection``.
    """

    def __init__(self, url: str, *, schema: str | None = None, echo: bool = False) -> None:
        self.url = url
        self.schema = schema
        self._sqlite = url.startswith("sqlite")
        if self._sqlite and schema:
            raise ValueError("a schema needs PostgreSQL; SQLite keeps one schema per file")
        self.engine: AsyncEngine = create_engine(url, echo=echo)
        self._connect_args: dict[str, Any] = engine_options(url)[1]["connect_args"]
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.metadata = storage_metadata(schema)
        prefix = f"{schema}." if schema else ""
        self.checkpoints = self.metadata.tables[prefix + "objects_checkpoints"]
        self.journal = self.metadata.tables[prefix + "objects_journal"]
        owners = self.metadata.tables[prefix + "objects_owners"]
        self._listing = SQLListing(self.checkpoints, owners)
        self._cluster = self.metadata.tables[prefix + "objects_cluster"]
        self._alarms = SQLAlarms(
            self.metadata.tables[prefix + "objects_alarms"], postgres=not self._sqlite
        )
        self._history = SQLHistory(
            self.metadata.tables[prefix + "objects_history"], postgres=not self._sqlite
        )
        self._owners = SQLOwners(
            self.metadata.tables[prefix + "objects_nodes"], owners, self.checkpoints,
            postgres=not self._sqlite,
        )
        self._writer: SQLiteWorker | None = None
        self._reader: SQLiteWorker | None = None
        self._writes: PostgresWrites | SQLiteWrites
        self._thaw: PostgresThaw | None = None
        if self._sqlite:
            self._writes = SQLiteWrites(self._alarms)
            path = self.engine.url.database or ":memory:"
            self._writer = SQLiteWorker(path, "writer")
            # An in-memory database exists only on the connection that made it.
            in_memory = path == ":memory:" or "mode=memory" in url
            self._reader = self._writer if in_memory else SQLiteWorker(path, "reader")
        else:
            self._writes = PostgresWrites(
                self.checkpoints, self.journal, owners, self._connect_driver
            )
            self._thaw = PostgresThaw(
                self.checkpoints, owners, self.metadata.tables[prefix + "objects_nodes"],
                self.metadata.tables[prefix + "objects_alarms"], self._writes.run,
            )

    async def close(self) -> None:
        """Dispose of the connection pool (and the writer's connections)."""
        if isinstance(self._writes, PostgresWrites):
            await self._writes.close()
        for worker in {self._writer, self._reader} - {None}:
            assert worker is not None
            await worker.close()
        await self.engine.dispose()

    async def _connect_driver(self) -> Any:
        """A new asyncpg connection, made as the engine makes its own."""
        engine = self.engine.sync_engine
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        cparams.update(self._connect_args)
        import asyncpg  # type: ignore[import-untyped]

        return await asyncpg.connect(*cargs, **cparams)

    async def _write(self, fn: Callable[..., R], *args: Any) -> R:
        """Run ``fn(connection, *args)`` as one transaction (SQLite: on the writer)."""
        with self._unavailable():
            if self._writer is not None:
                return await self._writer.run(fn, *args, write=True)
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn, *args)

    async def _read(self, fn: Callable[..., R], *args: Any) -> R:
        """Run ``fn(connection, *args)`` outside a transaction (SQLite: on the reader)."""
        with self._unavailable():
            if self._reader is not None:
                return await self._reader.run(fn, *args)
            # Single-statement reads run without BEGIN/ROLLBACK around them: one round trip.
            async with self._autocommit.connect() as conn:
                return await conn.run_sync(fn, *args)

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        try:
            yield
        except StorageUnavailable:
            raise
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sqlite3.OperationalError,
                OSError, TimeoutError) as exc:
            raise StorageUnavailable.hiding(
                "storage unavailable", f"{redact(self.url)}: {exc}"
            ) from exc
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise StorageUnavailable.hiding("storage connection lost", exc) from exc
            raise StorageUnavailable.hiding("storage refused the transaction", exc) from exc
        except sqlite3.Error as exc:
            raise StorageUnavailable.hiding("storage refused the transaction", exc) from exc

    async def create_tables(self) -> None:
        """Create the tables of every version (and the schema) when missing.

        Several processes starting at once (``uvicorn --workers N``, a fleet's first deploy)
        must not race between "is it there?" and "create it": PostgreSQL's ``IF NOT EXISTS``
        is no guard against a concurrent creation (a unique violation in its catalog), so the
        creations queue on a transaction-scoped advisory lock. SQLite checks and creates under
        its write lock.
        """
        await self._write(self._create_tables)

    def _create_tables(self, conn: sa.Connection) -> None:
        if not self._sqlite:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                         {"name": "fastapi_objects: create_tables"})
            if self.schema:
                conn.execute(sa.schema.CreateSchema(self.schema, if_not_exists=True))
        self.metadata.create_all(conn, checkfirst=True)
        add_missing_columns(conn, self.metadata)  # tables an older release created

    async def load(self, type: str, key: str) -> Checkpoint | None:
        """Return the checkpoint of ``(type, key)`` or ``None``."""
        row = await self._read(_first, self._listing.load(type, key))
        return None if row is None else checkpoint_of(row._mapping)

    async def read_journal(
        self, type: str, key: str, after_rev: int = 0, limit: int | None = None
    ) -> list[JournalEntry]:
        """Return journal entries after ``after_rev`` in order."""
        j = self.journal
        stmt = (
            sa.select(j.c.rev, j.c.kind, j.c.payload, j.c.at)
            .where(j.c.type == type, j.c.key == key, j.c.rev > after_rev)
            .order_by(j.c.rev)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        rows = await self._read(_all, stmt)
        return [JournalEntry(r.rev, r.kind, r.payload, utc(r.at)) for r in rows]

    async def commit(
        self,
        commits: Sequence[Commit],
        statuses: Sequence[StatusUpdate] = (),
        node_id: str | None = None,
    ) -> list[bool]:
        """Apply every commit in one transaction; ``False`` marks a fenced-out commit."""
        now = datetime.now(UTC)
        done: set[tuple[str, str]] = set()
        statuses = sorted(statuses, key=_ident)
        releases = [
            (s.type, s.key, s.release_epoch) for s in statuses if s.release_epoch is not None
        ]
        writes = self._writes
        alarms = self._alarms
        if isinstance(writes, PostgresWrites):  # one statement: atomic on its own
            if commits:
                then = None
                if any(c.alarms or c.history for c in commits):
                    history = self._history

                    async def then(conn: Any, applied: set[tuple[str, str]]) -> None:
                        await alarms.write_asyncpg(conn, *alarm_writes(commits, applied))
                        await history.write_asyncpg(conn, commits, applied, now)
                done = await writes.commit(commits, now, node_id, then)
            if statuses:
                await writes.statuses(statuses)
            if releases and node_id is not None:
                await writes.release(node_id, releases)
        else:
            done = await self._write(writes.commit, commits, statuses, releases, node_id, now)
        return [(c.type, c.key) in done for c in commits]

    # -- nodes and ownership -----------------------------------------------------------------

    async def register_node(
        self, node_id: str, address: str | None, region: str | None, machine: str | None,
        process: NodeProcess | None = None,
    ) -> None:
        """Insert or refresh the node's row."""
        await self._write(self._owners.register, node_id, address, region, machine, process)

    async def heartbeat(self, node_id: str) -> bool:
        """Stamp the node's heartbeat."""
        return await self._write(self._owners.heartbeat, node_id)

    async def declare_dead(self, node_id: str, process: NodeProcess) -> bool:
        """Mark a node proven dead, if its row still records ``process``."""
        return await self._write(self._owners.declare_dead, node_id, process)

    async def deregister_node(self, node_id: str) -> None:
        """Release the node's objects and delete its row."""
        await self._write(self._owners.deregister, node_id)

    async def nodes(self, ttl: float, count_owned: bool = True) -> list[NodeInfo]:
        """Every registered node."""
        return await self._read(self._owners.list, ttl, count_owned)

    async def prune_nodes(self, dead_for: float) -> int:
        """Delete long-dead nodes' rows."""
        return await self._write(self._owners.prune, dead_for)

    async def cluster_secret(self) -> str:
        """The cluster's random secret (``objects_cluster``), made by the first node to ask."""
        return await self._write(cluster_secret, self._cluster, not self._sqlite)

    async def claim(self, type: str, key: str, node_id: str, ttl: float) -> Claim:
        """Own ``(type, key)`` if it is free."""
        return await self._write(self._owners.claim, type, key, node_id, ttl)

    async def claim_many(
        self, idents: Sequence[tuple[str, str]], node_id: str, ttl: float
    ) -> dict[tuple[str, str], Claim]:
        """Own many objects at once (one statement)."""
        if self._thaw is not None:
            return await self._thaw.claim_many(idents, node_id, ttl)
        return await self._write(self._owners.claim_many, idents, node_id, ttl)

    async def thaw_many(
        self, idents: Sequence[tuple[str, str]], node_id: str, ttl: float
    ) -> dict[tuple[str, str], Thawed]:
        """Claim and read the granted objects: one statement, or one transaction."""
        if self._thaw is not None:
            return await self._thaw.thaw_many(idents, node_id, ttl)
        return await self._write(self._thaw_sqlite, idents, node_id, ttl)

    def _thaw_sqlite(
        self, conn: sa.Connection, idents: Sequence[tuple[str, str]], node_id: str, ttl: float
    ) -> dict[tuple[str, str], Thawed]:
        claims = self._owners.claim_many(conn, idents, node_id, ttl)
        granted = [ident for ident, claim in claims.items() if claim.granted]
        thawed: dict[tuple[str, str], Thawed] = {ident: (c, None) for ident, c in claims.items()}
        if not granted:
            return thawed
        cp = self.checkpoints
        # The JSON columns as text: a row that cannot be decoded fails only its own thaw.
        columns = [sa.type_coerce(c, sa.Text) if c.name in ("state", "metadata") else c
                   for c in cp.columns]
        rows = conn.execute(
            sa.select(*columns).where(sa.tuple_(cp.c.type, cp.c.key).in_(granted))
        ).all()
        for r in rows:
            ident = (r.type, r.key)
            try:
                thawed[ident] = (claims[ident], checkpoint_of(r._mapping, from_json))
            except ValueError as exc:
                thawed[ident] = (claims[ident], exc)
        return thawed

    async def load_many(
        self, idents: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Checkpoint]:
        """Many checkpoints in one query."""
        if not idents:
            return {}
        if self._thaw is not None:
            return await self._thaw.load_many(idents)
        cp = self.checkpoints
        stmt = sa.select(cp).where(sa.tuple_(cp.c.type, cp.c.key).in_([tuple(i) for i in idents]))
        rows = await self._read(_all, stmt)
        return {(r.type, r.key): checkpoint_of(r._mapping) for r in rows}

    # -- alarms --------------------------------------------------------------------------------

    async def load_alarms_many(
        self, idents: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[Alarm]]:
        """The objects' alarms (one query)."""
        if not idents:
            return {}
        if self._thaw is not None:
            return await self._thaw.load_alarms_many(idents)
        return await self._read(self._alarms.load_many, idents)

    async def claim_due_alarms(
        self, limit: int, lease: float, ahead: float = 0.0
    ) -> list[Alarm]:
        """Take alarms due within ``ahead`` seconds for delivery (one statement)."""
        return await self._write(self._alarms.claim_due, limit, lease, ahead)

    async def record_alarm_failure(self, alarm: Alarm) -> bool:
        """Store a failed delivery's retry state."""
        return await self._write(self._alarms.record_failure, alarm)

    # -- kept states ---------------------------------------------------------------------------

    async def history(
        self, type: str, key: str, before_rev: int | None = None, limit: int = 100
    ) -> list[KeptState]:
        """Kept states, newest first, without their states."""
        return await self._read(self._history.list, type, key, before_rev, limit)

    async def kept_state(
        self, type: str, key: str, *, rev: int | None = None, at: datetime | None = None
    ) -> KeptState | None:
        """The newest kept state at or before ``rev`` (or ``at``)."""
        return await self._read(self._history.find, type, key, rev, at)

    async def prune_history(self, type: str, before: datetime, limit: int) -> int:
        """Delete superseded kept states older than ``before`` (one statement)."""
        return await self._write(self._history.prune, type, before, limit)

    async def clock(self) -> datetime:
        """PostgreSQL's clock (heartbeats are stamped with it); on SQLite, this machine's."""
        if self._sqlite:
            return datetime.now(UTC)
        now = await self._read(_first, sa.select(sa.func.clock_timestamp()))
        return utc(now[0])

    async def owners(self, idents: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The owning node of each object."""
        return await self._read(self._owners.owners_of, idents)

    async def query(self, query: ObjectQuery) -> ObjectPage:
        """List checkpoints matching the filters, ``limit`` at a time."""
        rows = await self._read(_all, self._listing.query(query))
        items = [checkpoint_of(r._mapping) for r in rows[: query.limit]]
        more = len(rows) > query.limit
        return ObjectPage(items, encode_cursor(items[-1].type, items[-1].key) if more else None)

    async def stats(self) -> list[TypeStats]:
        """Count objects per type and status."""
        rows = await self._read(_all, self._listing.stats())
        return [TypeStats(r[0], r[1], r[2]) for r in rows]

    async def delete(self, type: str, key: str) -> bool:
        """Delete the checkpoint, journal and alarms of ``(type, key)``."""
        return await self._write(self._purge, type, key)

    async def destroy(self, type: str, key: str, node_id: str, epoch: int) -> bool:
        """Delete everything of ``(type, key)`` if ``node_id`` owns it at ``epoch``."""
        return await self._write(self._destroy, type, key, node_id, epoch)

    def _destroy(self, conn: sa.Connection, type: str, key: str, node_id: str, epoch: int) -> bool:
        o = self._owners.owners
        # The owner row goes first: a write that fences the rest.
        gone = conn.execute(
            sa.delete(o).where(o.c.type == type, o.c.key == key, o.c.node_id == node_id,
                               o.c.epoch == epoch)
        )
        if gone.rowcount != 1:
            return False
        self._purge(conn, type, key)
        return True

    def _purge(self, conn: sa.Connection, type: str, key: str) -> bool:
        cp, j, a, h = self.checkpoints, self.journal, self._alarms.table, self._history.table
        conn.execute(sa.delete(j).where(j.c.type == type, j.c.key == key))
        conn.execute(sa.delete(h).where(h.c.type == type, h.c.key == key))
        conn.execute(sa.delete(a).where(a.c.type == type, a.c.key == key))
        result = conn.execute(sa.delete(cp).where(cp.c.type == type, cp.c.key == key))
        return bool(result.rowcount == 1)


def _first(conn: sa.Connection, stmt: sa.Executable) -> Any:
    return conn.execute(stmt).first()


def _all(conn: sa.Connection, stmt: sa.Executable) -> Sequence[Any]:
    return conn.execute(stmt).all()

