"""SQL storage on SQLAlchemy 2 async Core: SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._exceptions import StorageUnavailable
from ._alarms import SQLAlarms, alarm_writes
from ._owners import SQLOwners
from ._rows import checkpoint_of, utc
from ._thaw_pg import PostgresThaw
from ._writes import PostgresWrites, _ident
from ._writes_sqlite import SQLiteWrites
from .base import (
    Alarm,
    Checkpoint,
    Claim,
    Commit,
    JournalEntry,
    NodeInfo,
    ObjectPage,
    ObjectQuery,
    StatusUpdate,
    Storage,
    TypeStats,
    decode_cursor,
    encode_cursor,
)
from .engine import create_engine, engine_options
from .tables import storage_metadata
from .urls import redact


class SQLStorage(Storage):
    """Storage in SQLite or PostgreSQL; one transaction per group commit."""

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
        self._alarms = SQLAlarms(
            self.metadata.tables[prefix + "objects_alarms"], postgres=not self._sqlite
        )
        self._owners = SQLOwners(
            self.metadata.tables[prefix + "objects_nodes"], owners, postgres=not self._sqlite
        )
        self._writes: PostgresWrites | SQLiteWrites = (
            SQLiteWrites(self.checkpoints, self.journal, self._owners)
            if self._sqlite
            else PostgresWrites(self.checkpoints, self.journal, owners, self._connect_driver)
        )
        self._thaw: PostgresThaw | None = None
        if isinstance(self._writes, PostgresWrites):
            self._thaw = PostgresThaw(
                self.checkpoints, owners, self.metadata.tables[prefix + "objects_nodes"],
                self.metadata.tables[prefix + "objects_alarms"], self._writes.run,
            )

    async def close(self) -> None:
        """Dispose of the connection pool (and the writer's connections)."""
        if isinstance(self._writes, PostgresWrites):
            await self._writes.close()
        await self.engine.dispose()

    async def _connect_driver(self) -> Any:
        """A new asyncpg connection, made as the engine makes its own."""
        engine = self.engine.sync_engine
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        cparams.update(self._connect_args)
        import asyncpg  # type: ignore[import-untyped]

        return await asyncpg.connect(*cargs, **cparams)

    @asynccontextmanager
    async def _connect(self, write: bool = False) -> AsyncIterator[AsyncConnection]:
        # Single-statement reads run without BEGIN/ROLLBACK around them: one round trip.
        try:
            if write:
                async with self.engine.begin() as conn:
                    yield conn
            else:
                async with self._autocommit.connect() as conn:
                    yield conn
        except StorageUnavailable:
            raise
        except (sa.exc.OperationalError, sa.exc.InterfaceError, OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"storage unavailable ({redact(self.url)}): {exc}") from exc
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise StorageUnavailable(f"storage connection lost: {exc}") from exc
            raise StorageUnavailable(f"storage refused the transaction: {exc.orig}") from exc

    async def create_tables(self) -> None:
        """Create the tables of every version (and the schema) when missing.

        Several processes starting at once (``uvicorn --workers N`` on one SQLite file) race
        between "is it there?" and "create it": the loser finds the tables made and looks again.
        """
        for attempt in range(3):
            try:
                async with self._connect(write=True) as conn:
                    if self.schema and not self._sqlite:
                        await conn.execute(sa.schema.CreateSchema(self.schema, if_not_exists=True))
                    await conn.run_sync(self.metadata.create_all, checkfirst=True)
                return
            except StorageUnavailable as exc:
                if "already exists" not in exc.message or attempt == 2:
                    raise

    async def load(self, type: str, key: str) -> Checkpoint | None:
        """Return the checkpoint of ``(type, key)`` or ``None``."""
        cp = self.checkpoints
        stmt = sa.select(cp).where(cp.c.type == type, cp.c.key == key)
        async with self._connect() as conn:
            row = (await conn.execute(stmt)).first()
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
        async with self._connect() as conn:
            rows = (await conn.execute(stmt)).all()
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
                if any(c.alarms for c in commits):
                    async def then(conn: Any, applied: set[tuple[str, str]]) -> None:
                        await alarms.write_asyncpg(conn, *alarm_writes(commits, applied))
                done = await writes.commit(commits, now, node_id, then)
            if statuses:
                await writes.statuses(statuses)
            if releases and node_id is not None:
                await writes.release(node_id, releases)
        else:
            async with self._connect(write=True) as conn:
                if commits:
                    done = await writes.commit(conn, commits, now, node_id)
                    stores, deletes = alarm_writes(commits, done)
                    if stores or deletes:
                        await alarms.write(conn, stores, deletes)
                if statuses:
                    await writes.statuses(conn, statuses)
                if releases and node_id is not None:
                    await self._owners.release(conn, node_id, releases)
        return [(c.type, c.key) in done for c in commits]

    # -- nodes and ownership -----------------------------------------------------------------

    async def register_node(
        self, node_id: str, address: str | None, region: str | None, machine: str | None
    ) -> None:
        """Insert or refresh the node's row."""
        async with self._connect(write=True) as conn:
            await self._owners.register(conn, node_id, address, region, machine)

    async def heartbeat(self, node_id: str) -> bool:
        """Stamp the node's heartbeat (one autocommitted statement)."""
        async with self._connect(write=True) as conn:
            return await self._owners.heartbeat(conn, node_id)

    async def deregister_node(self, node_id: str) -> None:
        """Release the node's objects and delete its row."""
        async with self._connect(write=True) as conn:
            await self._owners.deregister(conn, node_id)

    async def nodes(self, ttl: float, count_owned: bool = True) -> list[NodeInfo]:
        """Every registered node."""
        async with self._connect() as conn:
            return await self._owners.list(conn, ttl, count_owned)

    async def prune_nodes(self, dead_for: float) -> int:
        """Delete long-dead nodes' rows."""
        async with self._connect(write=True) as conn:
            return await self._owners.prune(conn, dead_for)

    async def claim(self, type: str, key: str, node_id: str, ttl: float) -> Claim:
        """Own ``(type, key)`` if it is free."""
        async with self._connect(write=True) as conn:
            return await self._owners.claim(conn, type, key, node_id, ttl)

    async def claim_many(
        self, idents: Sequence[tuple[str, str]], node_id: str, ttl: float
    ) -> dict[tuple[str, str], Claim]:
        """Own many objects at once (PostgreSQL: one statement; SQLite: one transaction)."""
        if self._thaw is not None:
            return await self._thaw.claim_many(idents, node_id, ttl)
        async with self._connect(write=True) as conn:
            return await self._owners.claim_many(conn, idents, node_id, ttl)

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
        async with self._connect() as conn:
            rows = (await conn.execute(stmt)).all()
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
        async with self._connect() as conn:
            return await self._alarms.load_many(conn, idents)

    async def claim_due_alarms(
        self, limit: int, lease: float, ahead: float = 0.0
    ) -> list[Alarm]:
        """Take alarms due within ``ahead`` seconds for delivery (one statement)."""
        async with self._connect(write=True) as conn:
            return await self._alarms.claim_due(conn, limit, lease, ahead)

    async def record_alarm_failure(self, alarm: Alarm) -> bool:
        """Store a failed delivery's retry state."""
        async with self._connect(write=True) as conn:
            return await self._alarms.record_failure(conn, alarm)

    async def owners(self, idents: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The owning node of each object."""
        async with self._connect() as conn:
            return await self._owners.owners_of(conn, idents)

    async def query(self, query: ObjectQuery) -> ObjectPage:
        """List checkpoints matching the filters, ``limit`` at a time."""
        cp = self.checkpoints
        stmt = sa.select(cp).order_by(cp.c.type, cp.c.key).limit(query.limit + 1)
        if query.type is not None:
            stmt = stmt.where(cp.c.type == query.type)
        if query.status is not None:
            stmt = stmt.where(cp.c.status == query.status)
        if query.status_in is not None:
            stmt = stmt.where(cp.c.status.in_(query.status_in))
        if query.key_prefix:
            stmt = stmt.where(
                cp.c.key >= query.key_prefix, cp.c.key < query.key_prefix + "\U0010ffff"
            )
        if query.state_version is not None:
            stmt = stmt.where(cp.c.state_version == query.state_version)
        if query.updated_after is not None:
            stmt = stmt.where(cp.c.updated_at > _to_utc(query.updated_after))
        if query.updated_before is not None:
            stmt = stmt.where(cp.c.updated_at < _to_utc(query.updated_before))
        if query.cursor is not None:
            after_type, after_key = decode_cursor(query.cursor)
            stmt = stmt.where(sa.tuple_(cp.c.type, cp.c.key) > sa.tuple_(after_type, after_key))
        async with self._connect() as conn:
            rows = (await conn.execute(stmt)).all()
        items = [checkpoint_of(r._mapping) for r in rows[: query.limit]]
        more = len(rows) > query.limit
        return ObjectPage(items, encode_cursor(items[-1].type, items[-1].key) if more else None)

    async def stats(self) -> list[TypeStats]:
        """Count objects per type and status."""
        cp = self.checkpoints
        stmt = (
            sa.select(cp.c.type, cp.c.status, sa.func.count())
            .group_by(cp.c.type, cp.c.status)
            .order_by(cp.c.type, cp.c.status)
        )
        async with self._connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [TypeStats(r[0], r[1], r[2]) for r in rows]

    async def delete(self, type: str, key: str) -> bool:
        """Delete the checkpoint, journal and alarms of ``(type, key)``."""
        async with self._connect(write=True) as conn:
            return await self._purge(conn, type, key)

    async def destroy(self, type: str, key: str, node_id: str, epoch: int) -> bool:
        """Delete everything of ``(type, key)`` if ``node_id`` owns it at ``epoch``."""
        o = self._owners.owners
        async with self._connect(write=True) as conn:
            # The owner row goes first: a write that takes SQLite's lock and fences the rest.
            gone = await conn.execute(
                sa.delete(o).where(o.c.type == type, o.c.key == key, o.c.node_id == node_id,
                                   o.c.epoch == epoch)
            )
            if gone.rowcount != 1:
                return False
            await self._purge(conn, type, key)
        return True

    async def _purge(self, conn: AsyncConnection, type: str, key: str) -> bool:
        cp, j, a = self.checkpoints, self.journal, self._alarms.table
        await conn.execute(sa.delete(j).where(j.c.type == type, j.c.key == key))
        await conn.execute(sa.delete(a).where(a.c.type == type, a.c.key == key))
        result = await conn.execute(sa.delete(cp).where(cp.c.type == type, cp.c.key == key))
        return bool(result.rowcount == 1)


def _to_utc(value: datetime) -> datetime:
    # SQLite stores times as UTC text and drops a parameter's offset, so compare in UTC;
    # a naive time is taken as UTC, as the rows are written.
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
