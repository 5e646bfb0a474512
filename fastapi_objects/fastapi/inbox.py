"""A session's incoming frames: each checked, then run as a task of its own.

A frame is strict JSON text: ``{"ref", "call": method, "args": {...}}`` (only methods marked
``@client_callable``), ``{"ref"?, "event", "payload"}`` for ``on_message``, or the protocol's
one client event, ``objects:state_request``. Anything else gets an error frame and the
connection stays open. While the client's object sleeps (hibernated with its sockets open),
the frames wait for it to thaw here and then run in arrival order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any

from .._exceptions import CallTimeout, ObjectsError, Overloaded
from .errors import error_body, internal_error
from .protocol import (
    FORBIDDEN,
    FRAME_TOO_LARGE,
    INVALID_FRAME,
    RESERVED_EVENT_PREFIX,
    STATE_REQUEST,
    decode_frame,
    encode_frame,
)

if TYPE_CHECKING:
    from ..runtime.connection import Connection
    from .session import Session


class Inbox:
    """The frames a session's client sends, and the calls they started."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.objects = session.objects
        self.cls = session.cls
        self.key = session.key
        self.topic = session.topic
        self.about = session.about
        self._push = session.push
        self.calls: set[asyncio.Task[None]] = set()
        # Frames that wait while the client's hibernated object thaws (``_wake``).
        self.waking: list[tuple[Any, Coroutine[Any, Any, None]]] | None = None
        self.state_requested = False  # an objects:state_request is being answered

    @property
    def conn(self) -> Connection | None:
        """The client's connection, once attached."""
        return self.session.conn

    def cancel(self) -> None:
        """The session ends: cancel the calls still running."""
        for task in list(self.calls):
            task.cancel()

    def handle(self, data: str) -> None:
        """Check one text frame and run what it asks (a reply or an error frame follows)."""
        limit = self.objects.max_frame_bytes
        size = len(data)
        if 4 * size > limit:  # a character is 1 to 4 bytes: encode only near the limit
            size = len(data.encode("utf-8", "surrogatepass"))
        if size > limit:
            self.error(None, FRAME_TOO_LARGE, f"frame is {size} bytes; the limit is {limit}")
            return
        try:
            frame = decode_frame(data)
        except ValueError as exc:
            self.error(None, INVALID_FRAME, f"frame is not strict JSON: {exc}")
            return
        if not isinstance(frame, dict):
            self.error(None, INVALID_FRAME, "a frame must be a JSON object")
            return
        ref = frame.get("ref")
        if ref is not None and (isinstance(ref, bool) or not isinstance(ref, str | int | float)):
            self.error(None, INVALID_FRAME, "ref must be a string or a number")
            return
        if "call" in frame:
            method, args = frame["call"], frame.get("args", {})
            if not isinstance(method, str) or not isinstance(args, dict):
                self.error(ref, INVALID_FRAME, 'a call is {"ref", "call": "method", "args": {}}')
            elif ref is None:
                # Its reply could not be matched to it: refuse it rather than run it blind.
                self.error(None, INVALID_FRAME, 'a call needs a "ref" (a string or a number) '
                            "to match its reply")
            elif not self._client_callable(method):
                self.error(ref, FORBIDDEN, f"{self.cls.type_name}.{method}() is not callable "
                            "from clients (only methods marked @client_callable are)")
            else:
                self._spawn(ref, self._call(ref, method, args))
        elif "event" in frame:
            event = frame["event"]
            if not isinstance(event, str):
                self.error(ref, INVALID_FRAME, "event must be a string")
            elif event == STATE_REQUEST:
                self._request_state(ref)
            elif event.startswith(RESERVED_EVENT_PREFIX):
                self.error(ref, INVALID_FRAME, f"events starting with {RESERVED_EVENT_PREFIX!r} "
                            "are reserved for the protocol")
            else:
                self._spawn(ref, self._event(ref, frame))
        else:
            self.error(ref, INVALID_FRAME, 'a frame needs "call" (with "args") or "event"')

    def _request_state(self, ref: Any) -> None:
        if self.cls.__objects_sync__ is None:
            self.error(ref, INVALID_FRAME, f"{self.cls.type_name} does not sync its state "
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
            await self._answer(ref, self.objects.runtime.gateway.request_state(self.conn),
                               "state request")
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
        await self._answer(ref, self.objects.runtime.gateway.message(self.conn, frame),
                           "on_message")

    async def _answer(self, ref: Any, work: Awaitable[None], what: str) -> None:
        """Await ``work``; reply ``ok`` (when the frame had a ref) or the error it raised."""
        try:
            await work
        except ObjectsError as exc:
            self._reply_error(ref, error_body(exc))
        except Exception as exc:
            self._reply_error(ref, internal_error(exc, f"{self.topic}: {what}", self.about))
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

    def error(self, ref: Any, type: str, message: str) -> None:
        """Send the client an error frame of ``type`` for frame ``ref``."""
        self._reply_error(ref, {"type": type, "message": message})
