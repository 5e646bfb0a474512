"""Websocket attach/detach: one ``_Session`` per client, speaking the JSON frames of DESIGN §3.

Client -> server: ``{"ref", "call": method, "args": {...}}`` or ``{"ref"?, "event", "payload"}``
(a custom event for ``on_message``). Server -> client: ``{"ref", "ok": true, "result"}``,
``{"ref", "ok": false, "error": {"type", "message"}}`` and broadcasts
``{"topic", "event", "payload"}``.

Close codes: 4400 invalid key, 4404 unknown type, 4401 unauthorized, 4403 origin not allowed
or rejected by ``on_connect``, 4408 client too slow, 1013 too many clients, 1012 object reloaded,
1011 attach failed (storage, or ``on_connect`` raised). Frames are JSON text: a binary frame,
like any malformed frame, gets an ``invalid_frame`` error frame and the connection stays open.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any

from pydantic_core import from_json, to_json
from starlette.websockets import WebSocket, WebSocketDisconnect

from .._exceptions import (
    ConnectionRejected,
    InvalidKey,
    ObjectsError,
    Overloaded,
    UnknownObjectType,
)
from ..pubsub import Message, Subscription, SubscriptionOverflow
from ..runtime.connection import Connection
from ..runtime.keys import validate_key
from .errors import error_body

if TYPE_CHECKING:
    from ..runtime.object import DurableObject
    from .objects import Objects

log = logging.getLogger("fastapi_objects")

_last_broadcast: tuple[Message | None, str] = (None, "")


def _encode_broadcast(message: Message) -> str:
    # Fan-out hands the same Message to every client of a topic: encode it once, not N times.
    # The cache is read once into a local: runtimes in other threads (several servers in one
    # process) share it, and a second read could return another thread's frame.
    global _last_broadcast
    cached, text = _last_broadcast
    if cached is not message:
        frame = {"topic": message.topic, "event": message.event, "payload": message.payload}
        text = to_json(frame).decode()
        _last_broadcast = (message, text)
    return text


async def serve_websocket(
    objects: Objects, websocket: WebSocket, cls: type[DurableObject[Any]] | str, key: str
) -> None:
    """Accept ``websocket``, check it, attach it to ``(cls, key)`` and serve it until it leaves."""
    await websocket.accept()
    try:
        if isinstance(cls, str):
            cls = objects.object_type(cls)
        key = validate_key(key)
    except UnknownObjectType as exc:
        await websocket.close(4404, exc.message[:120])
        return
    except InvalidKey as exc:
        await websocket.close(4400, exc.message[:120])
        return
    origin = websocket.headers.get("origin")
    allowed = objects.allowed_origins
    if allowed is not None and "*" not in allowed and origin not in allowed:
        await websocket.close(4403, f"origin {origin!r} is not allowed"[:120])
        return
    params: dict[str, Any] = dict(websocket.query_params)
    if objects.authorize is not None:
        try:
            verdict = objects.authorize(websocket, cls.type_name, key)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except ConnectionRejected as exc:
            await websocket.close(exc.code, exc.message[:120])
            return
        if not verdict:
            await websocket.close(4401, "unauthorized")
            return
        if isinstance(verdict, dict):
            params.update(verdict)
    await _Session(objects, websocket, cls, key).run(params)


class _Session:
    """One attached client: a reader (this task), a writer task and a broadcast forwarder."""

    def __init__(
        self, objects: Objects, websocket: WebSocket, cls: type[DurableObject[Any]], key: str
    ) -> None:
        self.objects = objects
        self.websocket = websocket
        self.cls = cls
        self.key = key
        self.topic = f"{cls.type_name}:{key}"
        # Unbounded queue, bounded by _push: a close marker must always fit.
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.close_with: tuple[int, str] | None = None
        self.conn: Connection | None = None
        self.calls: set[asyncio.Task[None]] = set()

    # -- Transport (what the runtime calls) --------------------------------------------------

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame for this client."""
        self._push(to_json(frame).decode())

    def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued."""
        if self.close_with is None:
            self.close_with = (code, reason[:120])
            self.outbox.put_nowait(None)

    def _push(self, text: str) -> None:
        if self.close_with is not None:
            return
        if self.outbox.qsize() >= self.objects.max_outbox:
            self.close(4408, "client too slow: outgoing frames backed up")
        else:
            self.outbox.put_nowait(text)

    # -- the session -------------------------------------------------------------------------

    async def run(self, params: dict[str, Any]) -> None:
        writer = asyncio.create_task(self._write())
        async with self.objects.subscribe(self.topic, max_queue=self.objects.max_outbox) as sub:
            forwarder = asyncio.create_task(self._forward(sub))
            try:
                await self._attach_and_read(params)
            finally:
                forwarder.cancel()
                for task in list(self.calls):
                    task.cancel()
                if self.conn is not None:
                    try:
                        await self.objects.detach(self.conn)
                    except Exception:  # the client is gone either way; say why in the log
                        log.exception("%s: on_disconnect failed", self.topic)
                self.close(1000, "")
                try:
                    await asyncio.wait_for(writer, timeout=5)
                except (TimeoutError, asyncio.CancelledError):
                    writer.cancel()

    async def _attach_and_read(self, params: dict[str, Any]) -> None:
        try:
            self.conn = await self.objects.attach(self.cls, self.key, self, params)
        except ConnectionRejected as exc:
            self.close(exc.code, exc.message)
            return
        except (ObjectsError, TimeoutError) as exc:
            self.close(1011, f"attach failed: {exc}")
            return
        except Exception as exc:
            # A bug in on_connect: the client must not see a normal close (1000).
            log.exception("%s: on_connect failed", self.topic)
            self.close(1011, f"on_connect raised {type(exc).__name__}: {exc}")
            return
        try:
            while self.close_with is None:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None:
                    # Frames are JSON text (what browsers send); a binary frame is a client bug.
                    self._error(None, "invalid_frame", "binary frames are not accepted: "
                                "send each frame as JSON in a text frame")
                    continue
                self._handle(text)
        except WebSocketDisconnect:
            return

    async def _write(self) -> None:
        ws = self.websocket
        try:
            while True:
                text = await self.outbox.get()
                if text is None:
                    break
                await ws.send_text(text)
            code, reason = self.close_with or (1000, "")
            await ws.close(code, reason)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client is already gone

    async def _forward(self, sub: Subscription) -> None:
        try:
            async for message in sub:
                if message.exclude is not None and self.conn and message.exclude == self.conn.id:
                    continue
                self._push(_encode_broadcast(message))
        except SubscriptionOverflow:
            self.close(4408, "client too slow: broadcasts backed up")

    # -- incoming frames ---------------------------------------------------------------------

    def _handle(self, data: str) -> None:
        limit = self.objects.max_frame_bytes
        size = len(data)
        if 4 * size > limit:  # a character is 1 to 4 bytes: encode only near the limit
            size = len(data.encode("utf-8", "surrogatepass"))
        if size > limit:
            self._error(None, "frame_too_large", f"frame is {size} bytes; the limit is {limit}")
            return
        try:
            frame = from_json(data)
        except ValueError as exc:
            self._error(None, "invalid_frame", f"frame is not valid JSON: {exc}")
            return
        if not isinstance(frame, dict):
            self._error(None, "invalid_frame", "a frame must be a JSON object")
            return
        ref = frame.get("ref")
        if isinstance(ref, dict | list):
            self._error(None, "invalid_frame", "ref must be a string or a number")
            return
        if "call" in frame:
            method, args = frame["call"], frame.get("args", {})
            if not isinstance(method, str) or not isinstance(args, dict):
                self._error(ref, "invalid_frame", 'a call is {"ref", "call": "method", "args": {}}')
                return
            self._spawn(ref, self._call(ref, method, args))
        elif "event" in frame:
            if not isinstance(frame["event"], str):
                self._error(ref, "invalid_frame", "event must be a string")
                return
            self._spawn(ref, self._event(ref, frame))
        else:
            self._error(ref, "invalid_frame", 'a frame needs "call" (with "args") or "event"')

    def _spawn(self, ref: Any, coro: Any) -> None:
        if len(self.calls) >= self.objects.max_calls_in_flight:
            coro.close()
            error = Overloaded(f"{len(self.calls)} calls already in flight on this connection")
            self._error(ref, error.type, error.message)
            return
        task = asyncio.create_task(coro)
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)

    async def _call(self, ref: Any, method: str, args: dict[str, Any]) -> None:
        try:
            result = await self.objects.call(self.cls, self.key, method, args)
            encoded = self.cls.__objects_methods__[method].encode_result(result)
        except ObjectsError as exc:
            self._reply_error(ref, exc)
        except Exception as exc:
            self._error(ref, "method_error", f"{method}() raised {type(exc).__name__}: {exc}")
        else:
            self.send({"ref": ref, "ok": True, "result": encoded})

    async def _event(self, ref: Any, frame: dict[str, Any]) -> None:
        assert self.conn is not None
        try:
            await self.objects.message(self.conn, frame)
        except ObjectsError as exc:
            self._reply_error(ref, exc)
        except Exception as exc:
            self._error(ref, "method_error", f"on_message raised {type(exc).__name__}: {exc}")
        else:
            if ref is not None:
                self.send({"ref": ref, "ok": True, "result": None})

    def _reply_error(self, ref: Any, exc: ObjectsError) -> None:
        self.send({"ref": ref, "ok": False, "error": error_body(exc)})

    def _error(self, ref: Any, type: str, message: str) -> None:
        self.send({"ref": ref, "ok": False, "error": {"type": type, "message": message}})
