"""The live view: an object's broadcasts as Server-Sent Events, wherever they are published.

With a pub/sub that crosses nodes (PostgreSQL, Redis) every node hears every broadcast: the
stream is a subscription on this node. With a process-local one (``memory://``, what SQLite
runs on) only the node holding the object hears them, so the stream also follows the owner:
it looks the owner up (at once, then every ``FOLLOW`` seconds) and, while another live node
holds the object, listens there too, over a signed websocket to that node's internal
listener, where ``serve_watch`` subscribes for it. Nothing attaches and nothing is woken.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..._exceptions import InvalidKey, ObjectsError, PubSubClosed, SubscriptionOverflow
from ...cluster.listener import WEBSOCKET_PREFIX
from ...runtime.gateway import Elsewhere
from ...runtime.keys import validate_key
from ..protocol import CloseCode, encode_frame

if TYPE_CHECKING:
    from ...pubsub import Message
    from ...runtime.object import DurableObject
    from ..objects import Objects

KEEPALIVE = 15.0
"""Seconds between comment lines on an idle live view (proxies drop silent streams)."""
FOLLOW = 1.0
"""Seconds between two looks at who owns the object (process-local pub/sub only)."""
WATCH = "watch"
"""The query parameter that asks a node's internal listener for a watch, not a session."""


async def stream(
    objects: Objects, cls: type[DurableObject[Any]], key: str
) -> AsyncIterator[str]:
    """The object's broadcasts as SSE ``data:`` lines holding websocket-style frames.

    Starts with a ``ready`` event once it listens wherever the object's broadcasts are
    published (what follows it arrives); ends when the pub/sub closes or it falls behind
    (``EventSource`` then reconnects).
    """
    frames = _Outbox(objects.max_outbox)
    topic = f"{cls.type_name}:{key}"
    async with objects.subscribe(topic, max_queue=objects.max_outbox) as sub:
        tasks = [asyncio.create_task(_local(sub, frames))]
        try:
            if objects.runtime.pubsub_url.startswith("memory://"):
                follower = _Follower(objects, cls, key, frames)
                await follower.look()  # before "ready": an owner elsewhere listens already
                tasks.append(asyncio.create_task(follower.run()))
            yield "retry: 2000\nevent: ready\ndata: {}\n\n"
            while True:
                try:
                    text = await asyncio.wait_for(frames.get(), KEEPALIVE)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if text is None:
                    return
                yield f"data: {text}\n\n"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class _Outbox(asyncio.Queue[str | None]):
    """The frames on their way to the browser; ``None`` ends the stream.

    Past ``limit`` frames waiting, the browser fell behind: the stream ends (it reconnects).
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def push(self, text: str | None) -> None:
        self.put_nowait(None if self.qsize() >= self.limit else text)


async def _local(sub: Any, frames: _Outbox) -> None:
    """This node's subscription into ``frames`` (``None`` once it ends)."""
    try:
        while True:
            text = _encoded(await sub.get())
            if text is not None:
                frames.push(text)
    except (PubSubClosed, SubscriptionOverflow):
        frames.push(None)


def _encoded(message: Message) -> str | None:
    frame = {"topic": message.topic, "event": message.event, "payload": message.payload}
    try:
        return encode_frame(frame)
    except ValueError:  # not strict JSON: websocket clients got an error frame for it
        return None


class _Follower:
    """Listens on the node that holds the object, and follows it when it moves."""

    def __init__(
        self, objects: Objects, cls: type[DurableObject[Any]], key: str, frames: _Outbox
    ) -> None:
        self._gateway = objects.runtime.gateway
        self._cls = cls
        self._key = key
        self._frames = frames
        self._owner: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(FOLLOW)
                await self.look()
        finally:
            self._drop()

    async def look(self) -> None:
        """Listen on the object's owner when another live node holds it (and only then)."""
        try:
            owner = await self._gateway.holder(self._cls, self._key)
        except ObjectsError:
            return  # the database is away: look again later
        if owner is None:
            self._drop()
            return
        if self._owner != owner.node_id or self._task is None or self._task.done():
            self._drop()
            listening = asyncio.get_running_loop().create_future()
            self._owner = owner.node_id
            self._task = asyncio.create_task(self._listen(owner, listening))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(listening), 5.0)

    def _drop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._task, self._owner = None, None

    async def _listen(self, owner: Elsewhere, listening: asyncio.Future[None]) -> None:
        import websockets
        from websockets.asyncio.client import connect

        target = f"{WEBSOCKET_PREFIX}{self._cls.type_name}/{self._key}?{WATCH}=1"
        headers = self._gateway.relay_headers(owner, target)
        try:
            if headers is None or owner.address is None:
                return
            url = "ws" + owner.address.removeprefix("http") + target
            async with connect(url, additional_headers=headers, open_timeout=5) as upstream:
                await upstream.recv()  # it subscribed
                listening.set_result(None)
                async for text in upstream:
                    self._frames.push(str(text))
        except (OSError, TimeoutError, websockets.WebSocketException):
            pass  # it stopped or moved: the next look finds where it went
        finally:
            if not listening.done():
                listening.set_result(None)


async def serve_watch(objects: Objects, websocket: WebSocket, type_name: str, key: str) -> None:
    """The owner's end of a watch (a signed peer's internal websocket): the topic's frames."""
    await websocket.accept()
    try:
        cls = objects.runtime.object_type(type_name)
        topic = f"{cls.type_name}:{validate_key(key)}"
    except (ObjectsError, InvalidKey) as exc:
        await websocket.close(CloseCode.UNKNOWN_TYPE, str(exc)[:120])
        return
    async with objects.subscribe(topic, max_queue=objects.max_outbox) as sub:
        await websocket.send_text("{}")  # subscribed: the watcher is ready
        gone = asyncio.create_task(_closed(websocket))
        try:
            while not gone.done():
                get = asyncio.create_task(sub.get())
                await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    break
                text = _encoded(get.result())
                if text is not None:
                    await websocket.send_text(text)
        except (PubSubClosed, SubscriptionOverflow, WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            gone.cancel()
    with contextlib.suppress(RuntimeError, OSError):
        await websocket.close()


async def _closed(websocket: WebSocket) -> None:
    """Return when the watcher hangs up (it sends nothing else)."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass
