"""Redis backend (the ``redis`` extra): PUBLISH/SUBSCRIBE on one channel per namespace."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from .._exceptions import MissingDependency, StorageUnavailable
from .base import Backend
from .messages import Message, decode_message, logger

_BACKOFF_MAX = 5.0


class RedisBackend(Backend):
    """PUBLISH and SUBSCRIBE on ``channel``: ``objects_pubsub`` or ``objects_pubsub.<schema>``.

    One channel for every topic, filtered locally, as the PostgreSQL backend does. Redis has no
    payload limit worth the name (512 MB), so large messages need no side table. A lost
    connection is re-established by redis-py, which subscribes again; messages sent meanwhile
    are lost (pub/sub is at-most-once on every backend).
    """

    def __init__(self, url: str, *, schema: str | None = None, node_id: str = "") -> None:
        _require_redis()
        self.url = url
        self.channel = f"objects_pubsub.{schema}" if schema else "objects_pubsub"
        # Shown by CLIENT LIST, so an operator sees which node listens.
        self.client_name = f"objects-pubsub:{node_id}"
        self._client: Any = None
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self, on_message: Callable[[Message], None]) -> None:
        """Subscribe to the channel; raises ``StorageUnavailable`` when Redis is unreachable."""
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        self._client = aioredis.Redis.from_url(self.url, client_name=self.client_name)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await self._pubsub.subscribe(self.channel)
        except (OSError, RedisError) as exc:
            await self.disconnect()
            where = f"{urlsplit(self.url).hostname}:{urlsplit(self.url).port or 6379}"
            raise StorageUnavailable.hiding(
                "pub/sub cannot reach Redis", f"{where}: {exc!r}"
            ) from exc
        self._task = asyncio.create_task(self._read(on_message), name="objects-pubsub-read")

    async def disconnect(self) -> None:
        """Unsubscribe and close the connections."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._pubsub is not None:
            await self._pubsub.aclose()
            self._pubsub = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def publish(self, batch: Sequence[tuple[Message, bytes]]) -> None:
        """PUBLISH the encoded messages, pipelined: one round trip per batch."""
        if self._client is None:
            raise StorageUnavailable("the Redis pub/sub is not connected")
        async with self._client.pipeline(transaction=False) as pipe:
            for _, data in batch:
                pipe.publish(self.channel, data)
            await pipe.execute()

    async def _read(self, on_message: Callable[[Message], None]) -> None:
        delay = 0.05
        while True:
            try:
                item = await self._pubsub.get_message(timeout=None)
            except Exception as exc:
                logger.warning("pub/sub: Redis read failed (%r); retry in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            delay = 0.05
            if item is None or item.get("type") != "message":
                continue
            try:
                message = decode_message(item["data"])
            except ValueError as exc:
                logger.error("pub/sub: skipped a malformed message on %s: %s", self.channel, exc)
                continue
            on_message(message)


def _require_redis() -> None:
    try:
        import redis.asyncio  # noqa: F401
    except ImportError:
        raise MissingDependency(
            "Redis pub/sub needs the redis package: pip install 'fastapi-objects[redis]'"
        ) from None
