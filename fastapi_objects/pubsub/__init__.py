"""Pub/sub: topics and fan-out across nodes, chosen by URL.

Example::

    from fastapi_objects.pubsub import open_pubsub

    async with open_pubsub("postgresql+asyncpg://localhost/app") as pubsub:
        async with pubsub.subscribe("counter:abc") as sub:
            await pubsub.publish("counter:abc", "changed", {"value": 1})
            async for message in sub:
                print(message.event, message.payload)
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from .._exceptions import PubSubClosed, SubscriptionOverflow
from .base import Backend, PubSub
from .messages import Message, decode_message, encode_message
from .subscription import Listener, Subscription

__all__ = [
    "Backend",
    "Listener",
    "Message",
    "PubSub",
    "PubSubClosed",
    "Subscription",
    "SubscriptionOverflow",
    "decode_message",
    "encode_message",
    "open_pubsub",
]

_POSTGRES_SCHEMES = ("postgresql+asyncpg", "postgresql", "postgres")


def open_pubsub(url: str, *, node_id: str | None = None, schema: str | None = None) -> PubSub:
    """Build a ``PubSub`` for ``url`` (not started: ``await pubsub.start()`` or ``async with``).

    - ``memory://`` or ``memory://name``: one process; every ``PubSub`` on the same URL (and
      ``schema``) is a node of the same in-process hub.
    - ``postgresql+asyncpg://``, ``postgresql://``, ``postgres://``: LISTEN/NOTIFY; payloads
      over 7,000 bytes go through the ``objects_pubsub`` table in ``schema``.
    - ``redis://host:port/db`` (or ``rediss://``): Redis PUBLISH/SUBSCRIBE (the ``redis`` extra).

    ``schema`` namespaces the channel (and, on PostgreSQL, names the table's schema).
    ``node_id`` defaults to a random id; messages coming back with it are dropped.
    """
    node = node_id or uuid.uuid4().hex[:16]
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        from .memory import MemoryBackend

        name = url if schema is None else f"{url}#{schema}"
        return PubSub(MemoryBackend(name), node)
    if scheme in _POSTGRES_SCHEMES:
        from .postgres import PostgresBackend

        dsn = "postgresql://" + url.split("://", 1)[1]  # asyncpg takes no "+driver"
        return PubSub(PostgresBackend(dsn, schema=schema, node_id=node), node)
    if scheme in ("redis", "rediss"):
        from .redis import RedisBackend

        return PubSub(RedisBackend(url, schema=schema, node_id=node), node)
    raise ValueError(
        f"unsupported pub/sub URL {url!r}: use memory://, postgresql+asyncpg:// "
        "(or postgresql://, postgres://) or redis://"
    )
