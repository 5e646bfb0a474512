"""One attached client's session: its frames in, its replies and broadcasts out (DESIGN §3).

Client -> server: ``{"ref", "call": method, "args": {...}}`` or ``{"ref"?, "event",
"payload"}`` (a custom event for ``on_message``). Server -> client: first ``{"topic", "event":
"objects:attached", "payload": {"connection": id}}`` once attached, then ``{"ref", "ok": true,
"result"}``, ``{"ref", "ok": false, "error": {"type", "message"}}`` and broadcasts ``{"topic",
"event", "payload"}``; presence frames (``objects:presence_state``, ``objects:presence_diff``)
as ``runtime/presence.py`` says. A call may run only a method marked ``@client_callable`` (else a
``forbidden`` error frame, and nothing runs). Frames are strict JSON text: a binary frame, like
any malformed frame, gets an ``invalid_frame`` error frame and the connection stays open.

For a class that syncs its state (``runtime/sync.py``) ``objects:state`` follows
``objects:attached`` at once, and ``{"event": "objects:state_request"}`` (the one protocol
event a client may send; one in flight per connection) asks for it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from .._exceptions import (
    CallTimeout,
    ConnectionRejected,
    ObjectsError,
    Overloaded,
)
from .._log import about
from ..pubsub import Message
from ..runtime.connection import Connection
from ..runtime.gateway import Elsewhere
from .errors import error_body, internal_error
from .outbox import Outbox, encode_broadcast
from .protocol import (
    ATTACHED,
    FORBIDDEN,
    FRAME_TOO_LARGE,
    INVALID_FRAME,
    RESERVED_EVENT_PREFIX,
    STATE_REQUEST,
    CloseCode,
    decode_frame,
    encode_frame,
)

if TYPE_CHECKING:
    from ..runtime.object import DurableObject
    from .objects import Objects

log = logging.getLogger("fastapi_objects")

class Session:
    """One attached client: a reader (this task), a writer task and a broadcast forwarder."""

    def __init__(
        self,
        objects: Objects,
        websocket: WebSocket,
        cls: type[DurableObject[Any]],
        key: str,
        *,
        relayed: bool = False,
    ) -> None:
        self.objects = objects
        self.relayed = relayed
        self.websocket = websocket
        self.cls = cls
        self.key = key
        self.topic = f"{cls.type_name}:{key}"
        self.about = about(cls.type_name, key, objects.node_id)  # its log records' extra
        self.outbox = Outbox(objects.max_outbox, objects.max_outbox_bytes)
        # Until attached, frames wait here so that objects:attached goes first; broadcasts wait
        # as messages, since whether one excludes this client is known only once attached.
        self.held: list[str | Message] | None = []
        self.close_with: tuple[int, str] | None = None
        self.conn: Connection | None = None
        self.calls: set[asyncio.Task[None]] = set()
        # Frames that wait while the client's hibernated object thaws (``_wake``).
        self.waking: list[tuple[Any, Coroutine[Any, Any, None]]] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.sending_since: float | None = None  # when the send under way began
        self.state_requested = False  # an objects:state_request is being answered
        self._watchdog: asyncio.TimerHandle | None = None

    # -- Transport (what the runtime calls) --------------------------------------------------

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame for this client (a frame that is not strict JSON is refused, logged)."""
        try:
            text = encode_frame(frame)
        except ValueError as exc:
            error = internal_error(exc, f"{self.topic}: conn.send({frame.get('event')!r})",
                                   self.about)
            text = encode_frame({"ref": None, "ok": False, "error": error})
        self._push(text)

    def send_text(self, text: str) -> None:
        """Queue a frame the runtime encoded once for many clients (presence, state sync)."""
        self._push(text)

    def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued (a client too slow: at once, dropping them)."""
        if self.close_with is None:
            self.close_with = (code, reason[:120])
            # A client too slow is not reading what waits: free that memory now.
            self.outbox.end(drop=code == CloseCode.TOO_SLOW)

    def _push(self, item: str | Message) -> None:
        if self.close_with is not None:
            return
        held = self.held
        if held is not None:
            if len(held) < self.objects.max_outbox:
                held.append(item)
                return
        elif isinstance(item, Message):
            if self.conn is not None and item.exclude == self.conn.id:
                return
            if self.outbox.put(encode_broadcast(item)):
                return
        elif self.outbox.put(item):
            return
        self.close(CloseCode.TOO_SLOW, "client too slow: outgoing frames backed up")

    # -- the session -------------------------------------------------------------------------

    async def run(self, query: dict[str, str], auth: dict[str, Any]) -> Elsewhere | None:
        """Serve the client until it leaves; ``Elsewhere`` (nothing sent) if not the owner."""
        writer = self.writer = asyncio.create_task(self._write())
        moved: Elsewhere | None = None
        try:
            # Broadcasts go straight into the outbox as they are delivered: no queue of the
            # pub/sub's and no task to wake per client and message (fan-out to thousands).
            with self.objects.runtime.gateway.listen(self.topic, self._push):
                try:
                    await self._attach_and_read(query, auth)
                except Elsewhere as owner:
                    moved = owner
                finally:
                    for task in list(self.calls):
                        task.cancel()
                    if self.conn is not None:
                        try:
                            await self.objects.runtime.gateway.detach(self.conn)
                        except Exception:  # the client is gone either way; say why in the log
                            log.exception("%s: on_disconnect failed", self.topic, extra=self.about)
        finally:
            if moved is not None:  # the websocket stays open for the relay
                writer.cancel()
            else:
                self.close(CloseCode.NORMAL, "")
                try:
                    await asyncio.wait_for(writer, timeout=5)
                except (TimeoutError, asyncio.CancelledError):
                    writer.cancel()
        return moved

    async def _attach_and_read(self, query: dict[str, str], auth: dict[str, Any]) -> None:
        try:
            conn = await self.objects.runtime.gateway.attach(
                self.cls, self.key, self, query=query, auth=auth, relayed=self.relayed
            )
        except Elsewhere:
            raise  # another node owns it: serve_websocket relays the client there
        except ConnectionRejected as exc:
            self.close(exc.code, exc.message)
            return
        except (ObjectsError, TimeoutError) as exc:
            self.close(CloseCode.ATTACH_FAILED, f"attach failed: {exc}")
            return
        except Exception as exc:
            # A bug in on_connect: the client must not see a normal close (1000), nor its text.
            error = internal_error(exc, f"{self.topic}: on_connect", self.about)
            self.close(CloseCode.ATTACH_FAILED, f"attach failed: {error['message']}")
            return
        self._attached(conn, await self.objects.runtime.gateway.state_frames(conn))
        try:
            while self.close_with is None:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None:
                    # Frames are JSON text (what browsers send); a binary frame is a client bug.
                    self._error(None, INVALID_FRAME, "binary frames are not accepted: "
                                "send each frame as JSON in a text frame")
                    continue
                self._handle(text)
        except WebSocketDisconnect:
            return

    def _attached(self, conn: Connection, state: list[str]) -> None:
        """Say so first, then the state, then what waited for the attach (on_connect's sends)."""
        self.conn = conn
        held, self.held = self.held or [], None
        payload: dict[str, Any] = {"connection": conn.id}
        if conn.presence_synced:  # the presence state waits among the held frames
            payload["presence"] = True
        self._push(encode_frame({"topic": self.topic, "event": ATTACHED, "payload": payload}))
        for item in [*state, *held]:
            self._push(item)

    async def _write(self) -> None:
        """Send what the outbox holds, in order; then close.

        A send normally completes at once (the server's transport takes the bytes); it waits
        only when the network pushes back. A watchdog, not a timer per frame, closes a client
        whose send waited past ``send_timeout``.
        """
        ws = self.websocket
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self.objects.send_timeout, self._watch)
        try:
            while True:
                text = await self.outbox.get()
                if text is None:
                    break
                self.sending_since = loop.time()
                await ws.send_text(text)
                self.sending_since = None
            code, reason = self.close_with or (CloseCode.NORMAL, "")
            await ws.close(code, reason)
        except asyncio.CancelledError:
            if self.close_with is None or self.close_with[0] != CloseCode.TOO_SLOW:
                raise
            await self._abort()  # the watchdog stopped a send the client never took
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client is already gone
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()

    def _watch(self) -> None:
        """Every ``send_timeout``: close the client if a send has waited that long."""
        timeout = self.objects.send_timeout
        loop = asyncio.get_running_loop()
        since = self.sending_since
        if since is not None and loop.time() - since >= timeout:
            self.close(CloseCode.TOO_SLOW, f"client too slow: a frame was not taken within "
                       f"{timeout:g}s")
            if self.writer is not None:
                self.writer.cancel()
            return
        wait = timeout if since is None else timeout - (loop.time() - since)
        self._watchdog = loop.call_later(wait, self._watch)

    async def _abort(self) -> None:
        # The close frame queues behind what the client has not read (the server's
        # keep-alive pings end a client that never reads again).
        code, reason = self.close_with or (CloseCode.TOO_SLOW, "")
        try:
            await self.websocket.close(code, reason)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass

    # -- incoming frames ---------------------------------------------------------------------

    def _handle(self, data: str) -> None:
        limit = self.objects.max_frame_bytes
        size = len(data)
        if 4 * size > limit:  # a character is 1 to 4 bytes: encode only near the limit
            size = len(data.encode("utf-8", "surrogatepass"))
        if size > limit:
            self._error(None, FRAME_TOO_LARGE, f"frame is {size} bytes; the limit is {limit}")
            return
        try:
            frame = decode_frame(data)
        except ValueError as exc:
            self._error(None, INVALID_FRAME, f"frame is not strict JSON: {exc}")
            return
        if not isinstance(frame, dict):
            self._error(None, INVALID_FRAME, "a frame must be a JSON object")
            return
        ref = frame.get("ref")
        if ref is not None and (isinstance(ref, bool) or not isinstance(ref, str | int | float)):
            self._error(None, INVALID_FRAME, "ref must be a string or a number")
            return
        if "call" in frame:
            method, args = frame["call"], frame.get("args", {})
            if not isinstance(method, str) or not isinstance(args, dict):
                self._error(ref, INVALID_FRAME, 'a call is {"ref", "call": "method", "args": {}}')
            elif ref is None:
                # Its reply could not be matched to it: refuse it rather than run it blind.
                self._error(None, INVALID_FRAME, 'a call needs a "ref" (a string or a number) '
                            "to match its reply")
            elif not self._client_callable(method):
                self._error(ref, FORBIDDEN, f"{self.cls.type_name}.{method}() is not callable "
                            "from clients (only methods marked @client_callable are)")
            else:
                self._spawn(ref, self._call(ref, method, args))
        elif "event" in frame:
            event = frame["event"]
            if not isinstance(event, str):
                self._error(ref, INVALID_FRAME, "event must be a string")
            elif event == STATE_REQUEST:
                self._request_state(ref)
            elif event.startswith(RESERVED_EVENT_PREFIX):
                self._error(ref, INVALID_FRAME, f"events starting with {RESERVED_EVENT_PREFIX!r} "
                            "are reserved for the protocol")
            else:
                self._spawn(ref, self._event(ref, frame))
        else:
            self._error(ref, INVALID_FRAME, 'a frame needs "call" (with "args") or "event"')

    def _request_state(self, ref: Any) -> None:
        if self.cls.__objects_sync__ is None:
            self._error(ref, INVALID_FRAME, f"{self.cls.type_name} does not sync its state "
                        "(sync_state = True or client_view): there is no state to send")
        elif self.state_requested:
            # A flood costs one view: the one on its way already brings the whole state.
            self._reply_error(ref, error_body(Overloaded(
                "a state request is already in flight on this connection; its objects:state "
                "is on its way")))
        else:
            self.state_requested = self._spawn(ref, self._state_request(ref))

    async def _state_request(self, ref: Any) -> None:
        assert self.conn is not None
        try:
            await self.objects.runtime.gateway.request_state(self.conn)
        except ObjectsError as exc:
            self._reply_error(ref, error_body(exc))
        except Exception as exc:
            self._reply_error(ref, internal_error(exc, f"{self.topic}: state request", self.about))
        else:
            if ref is not None:
                self._push(encode_frame({"ref": ref, "ok": True, "result": None}))
        finally:
            self.state_requested = False

    def _client_callable(self, method: str) -> bool:
        # A name that is no method at all goes on, to be answered unknown_method.
        spec = self.cls.__objects_methods__.get(method)
        return spec is None or spec.client_callable

    def _spawn(self, ref: Any, coro: Coroutine[Any, Any, None]) -> bool:
        """Run a frame's work (held while its hibernated object thaws); ``False``: refused."""
        waking, conn = self.waking, self.conn
        in_flight = len(self.calls) + (len(waking) if waking else 0)
        if in_flight >= self.objects.max_calls_in_flight:
            coro.close()
            error = Overloaded(f"{in_flight} calls already in flight on this connection")
            self._reply_error(ref, error_body(error))
            return False
        if waking is None and conn is not None and conn.activation is None and (
            self.objects.runtime.gateway.asleep(conn)
        ):
            # Its object hibernated: thaw it here first, holding this frame and the next ones.
            waking = self.waking = []
            self._start(self._wake(conn))
        if waking is not None:
            waking.append((ref, coro))
        else:
            self._start(coro)
        return True

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)

    async def _wake(self, conn: Connection) -> None:
        """Thaw the hibernated object, then run the frames that waited, in arrival order.

        Another node holding it now closes the client 1012 (the runtime does): they don't run.
        """
        error = None
        try:
            woken = await self.objects.runtime.gateway.wake(conn)
        except ObjectsError as exc:
            woken, error = False, error_body(exc)
        except TimeoutError:
            woken, error = False, error_body(CallTimeout(f"{self.topic} did not thaw in time"))
        except Exception as exc:
            woken, error = False, internal_error(exc, f"{self.topic}: thaw", self.about)
        except BaseException:  # cancelled: the session is ending
            for _, coro in self.waking or ():
                coro.close()
            self.waking = None
            raise
        held, self.waking = self.waking or [], None
        if not woken:
            self.state_requested = False  # a held state request will not run: allow another
        for ref, coro in held:
            if woken:
                self._start(coro)
            else:
                coro.close()
                if error is not None:
                    self._reply_error(ref, error)

    async def _call(self, ref: Any, method: str, args: dict[str, Any]) -> None:
        try:
            result = await self.objects.call(self.cls, self.key, method, args)
            encoded = self.cls.__objects_methods__[method].encode_result(result)
            text = encode_frame({"ref": ref, "ok": True, "result": encoded})
        except ObjectsError as exc:
            self._reply_error(ref, error_body(exc))
        except Exception as exc:
            self._reply_error(ref, internal_error(exc, f"{self.topic}.{method}()", self.about))
        else:
            self._push(text)

    async def _event(self, ref: Any, frame: dict[str, Any]) -> None:
        assert self.conn is not None
        try:
            await self.objects.runtime.gateway.message(self.conn, frame)
        except ObjectsError as exc:
            self._reply_error(ref, error_body(exc))
        except Exception as exc:
            self._reply_error(ref, internal_error(exc, f"{self.topic}: on_message", self.about))
        else:
            if ref is not None:
                self._push(encode_frame({"ref": ref, "ok": True, "result": None}))

    def _reply_error(self, ref: Any, error: dict[str, Any]) -> None:
        try:
            text = encode_frame({"ref": ref, "ok": False, "error": error})
        except ValueError as exc:  # an app's error message that is not JSON text
            error = internal_error(exc, f"{self.topic}: error reply", self.about)
            text = encode_frame({"ref": ref, "ok": False, "error": error})
        self._push(text)

    def _error(self, ref: Any, type: str, message: str) -> None:
        self._reply_error(ref, {"type": type, "message": message})
