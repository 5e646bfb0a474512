"""In-process backend: every ``PubSub`` on the same ``memory://`` URL is a node of one hub."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from .base import Backend
from .messages import Message, decode_message, logger

_Receiver = tuple[asyncio.AbstractEventLoop, Callable[[Message], None]]

# Process-global, keyed by URL and schema, so two PubSub instances can play two nodes.
_hubs: dict[str, dict[MemoryBackend, _Receiver]] = {}


class MemoryBackend(Backend):
    """Moves JSON between the ``PubSub`` instances of one process that share a hub name.

    Messages go through the same JSON encoding as the network backends, so a payload that
    works here works on PostgreSQL and Redis too.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    async def connect(self, on_message: Callable[[Message], None]) -> None:
        """Join the hub."""
        _hubs.setdefault(self.name, {})[self] = (asyncio.get_running_loop(), on_message)

    async def disconnect(self) -> None:
        """Leave the hub."""
        hub = _hubs.get(self.name)
        if hub is not None:
            hub.pop(self, None)
            if not hub:
                del _hubs[self.name]

    async def publish(self, batch: Sequence[tuple[Message, bytes]]) -> None:
        """Hand each message to every other node of the hub (this node delivered it already)."""
        for _, data in batch:
            self._publish(data)

    def _publish(self, data: bytes) -> None:
        here = asyncio.get_running_loop()
        hub = _hubs.get(self.name, {})
        for backend, (loop, on_message) in list(hub.items()):
            if backend is self:
                continue
            if loop.is_closed():  # a node whose event loop ended without disconnecting
                hub.pop(backend, None)
                continue
            if loop is here:
                _receive(on_message, data)
            else:  # a node running in another thread's event loop
                loop.call_soon_threadsafe(_receive, on_message, data)


def _receive(on_message: Callable[[Message], None], data: bytes) -> None:
    try:
        message = decode_message(data)
    except ValueError as exc:
        logger.error("pub/sub: skipped a malformed message: %s", exc)
        return
    on_message(message)
