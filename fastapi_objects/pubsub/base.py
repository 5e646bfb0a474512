"""Topics and fan-out, written once above small backends.

``PubSub`` delivers a message to this node's subscribers at once, in call order, and hands it
to a ``Backend`` that carries it to the other nodes. A backend only moves encoded messages
between nodes (``connect``, ``disconnect``, ``publish``); it knows nothing of subscribers.

Example::

    async with open_pubsub("memory://") as pubsub:
        async with pubsub.subscribe("counter:abc") as sub:
            pubsub.publish_nowait("counter:abc", "changed", {"value": 1})
            message = await sub.get()
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from .._exceptions import ObjectsError, PubSubClosed
from .messages import Message, encode_message, logger
from .subscription import Listener, Subscription

# Past this many messages waiting for the backend, the oldest are dropped (and logged): the
# publisher runs inside the runtime's commit loop and must never block or grow memory forever.
_OUTBOX_LIMIT = 10_000
_SEND_ATTEMPTS = 5
_BATCH = 256  # messages per backend send
_FLUSH_TIMEOUT = 5.0


class Backend(ABC):
    """Carries encoded messages between nodes; every node's backend hears every message."""

    @abstractmethod
    async def connect(self, on_message: Callable[[Message], None]) -> None:
        """Start listening; call ``on_message`` (in the event loop, in arrival order) per message.

        Messages that cannot be decoded are logged and skipped; ``on_message`` also gets
        this node's own messages back, which ``PubSub`` drops by ``origin``.
        """

    @abstractmethod
    async def disconnect(self) -> None:
        """Stop listening and release connections."""

    @abstractmethod
    async def publish(self, batch: Sequence[tuple[Message, bytes]]) -> None:
        """Send each ``data`` (its ``message`` encoded) to every node, in order.

        A batch is whatever queued up while the previous one was sent: a backend sends it in
        as few round trips as it can.
        """


class PubSub:
    """Topics with fan-out to this node's subscribers and, through ``backend``, to other nodes."""

    def __init__(self, backend: Backend, node_id: str) -> None:
        self.backend = backend
        self.node_id = node_id
        self._topics: dict[str, dict[Subscription | Listener, None]] = {}
        # Ordered outbox: (message, encoded, future of an awaiting ``publish`` or None).
        self._outbox: deque[tuple[Message, bytes, asyncio.Future[None] | None]] = deque()
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    async def start(self) -> None:
        """Connect the backend and start the task that sends to the other nodes."""
        if self._closed:
            raise PubSubClosed("this pub/sub is closed; open a new one")
        if self._started:
            return
        await self.backend.connect(self._on_remote)
        self._sender = asyncio.create_task(self._send_loop(), name="objects-pubsub-sender")
        self._started = True

    async def close(self) -> None:
        """Send what is queued (for up to a few seconds), disconnect, end every subscription."""
        if self._closed:
            return
        self._closed = True
        if self._sender is not None:
            self._outbox.append((Message("", "", None), b"", None))  # end marker
            self._wakeup.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._sender), _FLUSH_TIMEOUT)
            except TimeoutError:
                logger.warning("pub/sub closed with %d messages unsent", len(self._outbox))
                self._sender.cancel()
                await asyncio.gather(self._sender, return_exceptions=True)
            for _, _, future in self._outbox:
                if future is not None and not future.done():
                    future.set_exception(PubSubClosed("the pub/sub closed before sending"))
            self._outbox.clear()
        if self._started:
            await self.backend.disconnect()
        for subscriptions in list(self._topics.values()):
            for subscription in list(subscriptions):
                subscription.close()

    async def __aenter__(self) -> PubSub:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def publish_nowait(
        self, topic: str, event: str, payload: Any, *, exclude: str | None = None
    ) -> None:
        """Deliver to this node's subscribers now and queue the send to the other nodes.

        Never blocks: safe to call from the runtime's commit loop. Raises ``PubSubClosed``
        when not started or closed, ``ValueError`` when ``payload`` is not JSON-compatible.
        """
        self._enqueue(topic, event, payload, exclude, None)

    async def publish(
        self, topic: str, event: str, payload: Any, *, exclude: str | None = None
    ) -> None:
        """Like ``publish_nowait``, but return only once the backend has sent the message."""
        future = asyncio.get_running_loop().create_future()
        self._enqueue(topic, event, payload, exclude, future)
        await future

    def _enqueue(
        self, topic: str, event: str, payload: Any, exclude: str | None,
        future: asyncio.Future[None] | None,
    ) -> None:
        if self._closed or not self._started:
            state = "closed" if self._closed else "not started (call await pubsub.start())"
            raise PubSubClosed(f"cannot publish on {topic!r}: the pub/sub is {state}")
        message = Message(topic, event, payload, exclude, self.node_id)
        data = encode_message(message)  # before local delivery: every node sees the same JSON
        self._deliver(message)
        if len(self._outbox) >= _OUTBOX_LIMIT:
            _, _, dropped = self._outbox.popleft()
            logger.error("pub/sub outbox full (%d); dropped the oldest message", _OUTBOX_LIMIT)
            if dropped is not None and not dropped.done():
                dropped.set_exception(PubSubClosed("dropped: the pub/sub outbox was full"))
        self._outbox.append((message, data, future))
        self._wakeup.set()

    def subscribe(self, topic: str, *, max_queue: int = 1024) -> Subscription:
        """Subscribe to exactly ``topic`` (no wildcards) from now on."""
        if self._closed:
            raise PubSubClosed(f"cannot subscribe to {topic!r}: the pub/sub is closed")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        subscription = Subscription(self, topic, max_queue)
        self._topics.setdefault(topic, {})[subscription] = None
        return subscription

    def listen(self, topic: str, callback: Callable[[Message], None]) -> Listener:
        """Call ``callback(message)`` for each message on ``topic``, as it is delivered.

        Delivery is synchronous, in publishing order (local messages inside
        ``publish_nowait``, remote ones as the backend reads them): the callback must not
        block. Close the returned ``Listener`` to stop.
        """
        if self._closed:
            raise PubSubClosed(f"cannot listen to {topic!r}: the pub/sub is closed")
        listener = Listener(self, topic, callback)
        self._topics.setdefault(topic, {})[listener] = None
        return listener

    def _unsubscribe(self, subscription: Subscription | Listener) -> None:
        subscriptions = self._topics.get(subscription.topic)
        if subscriptions is not None:
            subscriptions.pop(subscription, None)
            if not subscriptions:
                del self._topics[subscription.topic]

    def subscriber_count(self, topic: str) -> int:
        """How many subscriptions on this node are open on ``topic``."""
        return len(self._topics.get(topic, ()))

    def _deliver(self, message: Message) -> None:
        subscriptions = self._topics.get(message.topic)
        if subscriptions:
            for subscription in list(subscriptions):
                subscription._put(message)

    def _on_remote(self, message: Message) -> None:
        if message.origin != self.node_id:  # our own were delivered when published
            self._deliver(message)

    async def _send_loop(self) -> None:
        outbox = self._outbox
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while outbox:
                batch: list[tuple[Message, bytes]] = []
                futures: list[asyncio.Future[None] | None] = []
                while outbox and len(batch) < _BATCH:
                    if not outbox[0][1]:
                        break  # the end marker queued by close()
                    message, data, future = outbox.popleft()
                    batch.append((message, data))
                    futures.append(future)
                if not batch:
                    return
                try:
                    error = await self._send(batch)
                except asyncio.CancelledError:
                    for future in futures:
                        if future is not None and not future.done():
                            future.set_exception(PubSubClosed("the pub/sub closed before sending"))
                    raise
                for future in futures:
                    if future is not None and not future.done():
                        if error is None:
                            future.set_result(None)
                        else:
                            future.set_exception(error)

    async def _send(self, batch: list[tuple[Message, bytes]]) -> Exception | None:
        attempt, delay = 1, 0.05
        message = batch[0][0]
        while True:
            try:
                await self.backend.publish(batch)
                return None
            except Exception as exc:
                # An ObjectsError is a clear, lasting problem (a missing table): no retry.
                if attempt == _SEND_ATTEMPTS or isinstance(exc, ObjectsError):
                    logger.error("pub/sub: dropped %d messages from %r/%r after %d attempts: %r",
                                 len(batch), message.topic, message.event, attempt, exc)
                    return exc
                logger.warning("pub/sub: send failed (%r); retrying", exc)
            await asyncio.sleep(delay)
            attempt, delay = attempt + 1, delay * 2
