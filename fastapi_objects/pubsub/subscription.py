"""``Subscription``: one subscriber's bounded queue of messages on a topic."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from .._exceptions import PubSubClosed, SubscriptionOverflow
from .messages import Message, logger

if TYPE_CHECKING:
    from .base import PubSub


class Listener:
    """A callback called with each message published on one topic, as it is delivered.

    For subscribers that keep a queue of their own (a websocket session's outbox): no queue
    and no task to wake per message. A callback that raises is logged and stays subscribed.
    Close it (or leave its ``with`` block) to unsubscribe.
    """

    def __init__(self, pubsub: PubSub, topic: str, callback: Callable[[Message], None]) -> None:
        self.topic = topic
        self._pubsub = pubsub
        self._callback = callback
        self.closed = False

    def _put(self, message: Message) -> None:
        if not self.closed:
            try:
                self._callback(message)
            except Exception:
                logger.exception("a listener of %r failed", self.topic)

    def close(self) -> None:
        """Unsubscribe."""
        if not self.closed:
            self.closed = True
            self._pubsub._unsubscribe(self)

    def __enter__(self) -> Listener:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Subscription:
    """A bounded queue of the messages published on one topic.

    Use it as an async context manager (unsubscribes on exit) and an async iterator, or
    call ``await sub.get()``. If it falls ``max_queue`` messages behind it is closed, its
    queued messages are dropped, and the next read raises ``SubscriptionOverflow``.
    """

    def __init__(self, pubsub: PubSub, topic: str, max_queue: int) -> None:
        self.topic = topic
        self.max_queue = max_queue
        self._pubsub = pubsub
        self._items: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._overflowed = False
        self.closed = False

    def _put(self, message: Message) -> None:
        if self.closed:
            return
        if len(self._items) >= self.max_queue:
            self._overflowed = True
            self._items.clear()
            self.close()
            logger.warning("subscriber of %r fell %d messages behind; closed", self.topic,
                           self.max_queue)
            return
        self._items.append(message)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Message:
        """Wait for the next message; raises ``SubscriptionOverflow`` or ``PubSubClosed``."""
        while not self._items:
            if self._overflowed:
                raise SubscriptionOverflow(
                    f"the subscriber of topic {self.topic!r} fell more than {self.max_queue} "
                    "messages behind and was closed; subscribe again to resume"
                )
            if self.closed:
                raise PubSubClosed(f"the subscription to {self.topic!r} is closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def close(self) -> None:
        """Unsubscribe; a pending ``get`` wakes up (iteration ends, or reports the overflow)."""
        if not self.closed:
            self.closed = True
            self._pubsub._unsubscribe(self)
            self._wake()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        if self.closed and not self._items and not self._overflowed:
            raise StopAsyncIteration
        try:
            return await self.get()
        except PubSubClosed:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
