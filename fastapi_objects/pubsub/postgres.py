"""PostgreSQL backend: LISTEN/NOTIFY on one channel per schema, large payloads in a table.

A NOTIFY payload must stay under 8,000 bytes. Messages above ``NOTIFY_LIMIT`` bytes of JSON
are inserted into ``objects_pubsub`` and the NOTIFY carries only ``{"ref":<id>}``; receivers
fetch the row. Insert and NOTIFY are one statement, so the row is committed before anyone is
told about it. Rows older than ``RETENTION`` are deleted now and then by publishers.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._exceptions import MissingDependency, StorageUnavailable
from .base import Backend
from .messages import Message, decode_message, logger, own_prefix

NOTIFY_LIMIT = 7_000
RETENTION = "5 minutes"
_CLEANUP_EVERY = 60.0  # seconds between deletes of old rows, per publishing node
_HEALTH_EVERY = 10.0  # seconds between checks that the LISTEN connection is alive
_BACKOFF_MAX = 5.0


def _channel(schema: str | None) -> str:
    if not schema:
        return "objects_pubsub"
    name = f"objects_pubsub.{schema}"
    if len(name.encode()) > 63:  # PostgreSQL truncates identifiers past 63 bytes
        name = "objects_pubsub." + hashlib.sha256(schema.encode()).hexdigest()[:24]
    return name


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class PostgresBackend(Backend):
    """LISTEN on a dedicated connection (reconnected with backoff); publish through a small pool.

    ``channel`` is ``objects_pubsub`` (or ``objects_pubsub.<schema>``): one channel for every
    topic, filtered locally, so a node needs one LISTEN however many topics it follows.
    """

    def __init__(self, dsn: str, *, schema: str | None = None, node_id: str = "") -> None:
        self.dsn = dsn
        self.schema = schema
        self.channel = _channel(schema)
        self.table = f"{_quote(schema)}.objects_pubsub" if schema else "objects_pubsub"
        self.reconnects = 0
        # Shown in pg_stat_activity, so an operator sees which node listens and publishes.
        self._own = own_prefix(node_id)
        self.listen_name = f"objects-pubsub-listen:{node_id}"[:63]
        self.pool_name = f"objects-pubsub:{node_id}"[:63]
        self._pool: Any = None
        self._listener: Any = None
        self._lost = asyncio.Event()
        self._inbox: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_cleanup = 0.0

    async def connect(self, on_message: Callable[[Message], None]) -> None:
        """Open the pool and the LISTEN connection; raises ``StorageUnavailable`` if unreachable."""
        try:
            import asyncpg  # type: ignore[import-untyped]
        except ImportError:  # pragma: no cover - asyncpg is installed with the postgres extra
            raise MissingDependency(
                "PostgreSQL pub/sub needs asyncpg: pip install 'fastapi-objects[postgres]'"
            ) from None
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=2,
                server_settings={"application_name": self.pool_name},
            )
            await self._listen()
        except (OSError, asyncpg.PostgresError) as exc:
            await self.disconnect()
            raise StorageUnavailable.hiding("pub/sub cannot reach PostgreSQL", repr(exc)) from exc
        self._tasks = [
            asyncio.create_task(self._supervise(), name="objects-pubsub-listen"),
            asyncio.create_task(self._read(on_message), name="objects-pubsub-read"),
        ]

    async def disconnect(self) -> None:
        """Stop listening and close every connection."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._listener is not None:
            self._listener.terminate()  # LISTEN ends with the session; no round-trip needed
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def publish(self, batch: Sequence[tuple[Message, bytes]]) -> None:
        """NOTIFY the messages in order, a run of small ones per statement.

        A large one is stored and its row id NOTIFYed.
        """
        if self._pool is None:
            raise StorageUnavailable("the PostgreSQL pub/sub is not connected")
        small: list[str] = []
        for message, data in batch:
            if len(data) <= NOTIFY_LIMIT:
                small.append(data.decode())
                continue
            await self._notify(small)
            await self._publish_large(message, data)
        await self._notify(small)

    async def _notify(self, payloads: list[str]) -> None:
        if payloads:
            assert self._pool is not None
            # Notifications of one statement are delivered in the order they were raised.
            await self._pool.execute(
                "SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS t(p, i) "
                "ORDER BY i",
                self.channel, payloads,
            )
            payloads.clear()

    async def _publish_large(self, message: Message, data: bytes) -> None:
        import asyncpg

        assert self._pool is not None
        try:
            await self._pool.execute(
                f"WITH r AS (INSERT INTO {self.table} (topic, data, created_at) "
                "VALUES ($1, $2, now()) RETURNING id) "
                """SELECT pg_notify($3, '{"ref":' || id || '}') FROM r""",
                message.topic[:512], data.decode(), self.channel,
            )
        except asyncpg.UndefinedTableError as exc:
            raise StorageUnavailable(
                f"pub/sub payloads over {NOTIFY_LIMIT} bytes need the table {self.table}: "
                "create the storage tables (objects migrate, or create_tables())"
            ) from exc
        if time.monotonic() - self._last_cleanup > _CLEANUP_EVERY:
            self._last_cleanup = time.monotonic()
            await self._pool.execute(
                f"DELETE FROM {self.table} WHERE created_at < now() - interval '{RETENTION}'"
            )

    async def _listen(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(
            self.dsn, server_settings={"application_name": self.listen_name}
        )
        try:
            await conn.add_listener(self.channel, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        self._listener = conn
        self._lost.clear()
        conn.add_termination_listener(self._on_terminated)

    def _on_terminated(self, conn: object) -> None:
        if conn is self._listener:  # not an old connection we replaced ourselves
            self._lost.set()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if not payload.startswith(self._own):  # this node delivered its own already
            self._inbox.put_nowait(payload)

    async def _supervise(self) -> None:
        # Notifications sent while no connection listens are lost: pub/sub is at-most-once.
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), _HEALTH_EVERY)
            except TimeoutError:
                try:
                    await self._listener.execute("SELECT 1", timeout=_HEALTH_EVERY)
                    continue
                except Exception as exc:
                    logger.warning("pub/sub: LISTEN connection unhealthy: %r", exc)
            self._listener.terminate()
            delay = 0.05
            while True:
                try:
                    await self._listen()
                    break
                except Exception as exc:
                    logger.warning("pub/sub: reconnect failed (%r); retry in %.2fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _BACKOFF_MAX)
            self.reconnects += 1
            logger.info("pub/sub: LISTEN connection restored (%s)", self.channel)

    async def _read(self, on_message: Callable[[Message], None]) -> None:
        # One reader, in arrival order: a large message fetched from the table is not
        # overtaken by the small ones notified after it.
        while True:
            payload = await self._inbox.get()
            try:
                message = await self._resolve(payload)
            except Exception as exc:
                logger.error("pub/sub: skipped a malformed message on %s: %r", self.channel, exc)
                continue
            on_message(message)

    async def _resolve(self, payload: str) -> Message:
        if not payload.startswith('{"ref":'):
            return decode_message(payload)
        ref = int(payload[len('{"ref":') : -1])
        data = await self._pool.fetchval(f"SELECT data FROM {self.table} WHERE id = $1", ref)
        if data is None:
            raise ValueError(f"pub/sub row {ref} is gone (older than {RETENTION}?)")
        return decode_message(data)
