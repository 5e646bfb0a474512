"""The call channel between two nodes: one authenticated websocket, many calls in flight.

A node sends the calls it forwards to a peer over one websocket per peer (the ``websockets``
library on the sending side, the internal listener's uvicorn on the other). The upgrade is
signed like every internal request (``signing.py``: sender, receiver, time, nonce), so the
connection is authenticated once and its frames need no signature of their own (on Fly.io
the private network is WireGuard). Frames are JSON, in binary frames:

- call: ``{"id": n, "type": ..., "key": ..., "method": ..., "args": {...}, "trace"?: {...}}``
  (``trace``: the caller's trace context as W3C headers, ``traceparent``...; a peer that
  predates it ignores it, and a call without it is traced as a trace of its own);
- reply: ``{"id": n, "status": 200 | 400 | 421, "ok": ..., "result" | "error": ...}``
  (421: the peer does not own the object or is leaving; nothing ran).

What a caller learns when the channel breaks is exact in one case: a peer that is leaving
stops taking calls, answers every call it has started, and only then closes with ``LEAVING``.
So a call still unanswered at a ``LEAVING`` close did not run (the caller may send it again,
elsewhere); at any other close or drop its outcome is unknown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic_core import from_json, to_json

from .._exceptions import InvalidArguments

log = logging.getLogger("fastapi_objects")

CHANNEL_PATH = "/objects-internal/channel"
LEAVING = 4001
"""Close code of a leaving peer: every call it did not answer on this channel did not run."""
MAX_FRAME = 16 << 20

Reply = dict[str, Any]
Runner = Callable[[dict[str, Any]], Awaitable[tuple[int, Reply]]]
Sender = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receiver = Callable[[], Awaitable[MutableMapping[str, Any]]]


class ChannelClosed(Exception):
    """The channel closed before the answer; ``ran_nothing``: the peer said it ran nothing."""

    def __init__(self, message: str, ran_nothing: bool) -> None:
        super().__init__(message)
        self.ran_nothing = ran_nothing


class Channel:
    """The sending end: calls out, replies matched back to their callers by id."""

    def __init__(self, websocket: Any, on_close: Callable[[Channel], None]) -> None:
        self.websocket = websocket
        self._on_close = on_close
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._next = 0
        self.closed = False
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @property
    def usable(self) -> bool:
        """Whether a call sent now would reach the peer (the socket is open, not closing)."""
        from websockets.protocol import State

        return not self.closed and self.websocket.state is State.OPEN

    async def call(self, request: dict[str, Any]) -> Reply:
        """Send one call and wait for its reply; ``ChannelClosed`` if none comes."""
        self._next += 1
        ident = self._next
        data = to_json({"id": ident, **request})
        if len(data) > MAX_FRAME:
            raise InvalidArguments(
                f"the call is {len(data):,} bytes of JSON; a call forwarded to another node "
                f"carries at most {MAX_FRAME:,}"
            )
        if not self.usable:
            raise ChannelClosed("the channel was closed before the call was sent", True)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            # While the socket is OPEN, send() hands the frame to the transport before it can
            # fail: from here on the peer may run the call (see _read for what a close means).
            await self.websocket.send(data)
        except Exception:  # the reader settles the call from the close code
            pass
        try:
            return await future
        finally:
            self._pending.pop(ident, None)

    async def _read(self) -> None:
        import websockets

        try:
            async for frame in self.websocket:
                try:
                    reply = from_json(frame)
                    future = self._pending.pop(reply["id"], None)
                except (ValueError, KeyError, TypeError):
                    log.warning("unreadable frame on a call channel: %r", frame[:200])
                    continue
                if future is not None and not future.done():
                    future.set_result(reply)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed = True
            code = self.websocket.close_code
            ran_nothing = code == LEAVING
            reason = "the peer left" if ran_nothing else f"the connection closed ({code})"
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ChannelClosed(reason, ran_nothing))
            self._pending.clear()
            self._on_close(self)

    async def close(self) -> None:
        """Close the socket; calls still waiting get ``ChannelClosed``."""
        self.closed = True
        await self.websocket.close()
        await asyncio.gather(self._reader, return_exceptions=True)


class ChannelServer:
    """The receiving end, on the internal listener: runs each call as it arrives."""

    def __init__(self, run: Runner) -> None:
        self._run = run
        self.closing = False
        self._calls: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._send: Sender | None = None
        self._send_lock = asyncio.Lock()
        self._closed = False

    async def serve(self, receive: Receiver, send: Sender) -> None:
        """Accept the upgrade and serve calls until the peer disconnects or we close."""
        self._send = send
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        loop = asyncio.get_running_loop()
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                break
            data = message.get("bytes") or message.get("text") or b""
            task = loop.create_task(self._answer(data))
            self._calls.add(task)
            self._idle.clear()
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._calls.discard(task)
        if not self._calls:
            self._idle.set()

    async def _answer(self, data: str | bytes) -> None:
        try:
            request = from_json(data)
            ident = request["id"]
            if not isinstance(request, dict) or not isinstance(ident, int):
                raise TypeError("a call needs an integer id")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("dropped a bad frame on a call channel: %s", exc)
            return
        if self.closing:
            status, reply = 421, {"error": {"type": "moved", "message": "this node is leaving"}}
        else:
            status, reply = await self._run(request)
        await self._reply({"id": ident, "status": status, **reply})

    async def _reply(self, message: Reply) -> None:
        assert self._send is not None
        async with self._send_lock:
            if self._closed:
                return
            try:
                await self._send({"type": "websocket.send", "bytes": to_json(message)})
            except Exception:  # the peer is gone: it learns the outcome is unknown
                self._closed = True

    async def leave(self, within: float = 10.0) -> None:
        """Answer new calls "moved", finish the running ones, then close with ``LEAVING``.

        Calls still running after ``within`` seconds are left to finish unanswered: the
        channel then closes with 1001, and its peer learns their outcome is unknown.
        """
        self.closing = True
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
            code, reason = LEAVING, "node leaving"
        except TimeoutError:
            code, reason = 1001, "node leaving; calls still running"
        async with self._send_lock:
            if self._closed or self._send is None:
                return
            self._closed = True
            try:
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
            except Exception:  # already gone
                pass
