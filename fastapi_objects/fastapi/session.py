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
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from .._exceptions import ConnectionRejected, ObjectsError
from .._log import about
from ..cluster import Moved
from ..pubsub import Message
from ..runtime.connection import Connection
from ..runtime.gateway import Elsewhere
from .errors import internal_error
from .inbox import Inbox
from .outbox import Outbox, encode_broadcast
from .protocol import ATTACHED, INVALID_FRAME, CloseCode, encode_frame
from .writer import Writer

if TYPE_CHECKING:
    from ..runtime.object import DurableObject
    from .objects import Objects

log = logging.getLogger("fastapi_objects")

class Session:
    """One attached client: a reader (this task), a writer (``writer.py``), broadcasts in.

    What the client sends is its ``inbox``'s (``inbox.py``); this is the socket's life: the
    attach, the outgoing frames in order, the close.
    """

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
        self.inbox = Inbox(self)  # the client's frames: checked, then run
        self.writer = Writer(objects.flusher(), websocket, self.outbox, objects.send_timeout,
                             lambda reason: self.close(CloseCode.TOO_SLOW, reason))

    # -- Transport (what the runtime calls) --------------------------------------------------

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame for this client (a frame that is not strict JSON is refused, logged)."""
        try:
            text = encode_frame(frame)
        except ValueError as exc:
            error = internal_error(exc, f"{self.topic}: conn.send({frame.get('event')!r})",
                                   self.about)
            text = encode_frame({"ref": None, "ok": False, "error": error})
        self.push(text)

    def send_text(self, text: str) -> None:
        """Queue a frame the runtime encoded once for many clients (presence, state sync)."""
        self.push(text)

    def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued (a client too slow: at once, dropping them)."""
        if self.close_with is None:
            self.close_with = (code, reason[:120])
            self.writer.close(code, reason)

    def push(self, item: str | Message) -> None:
        """Queue a frame (a broadcast: unless it excludes this client) or close a slow client."""
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
                self.writer.wake()
                return
        elif self.outbox.put(item):
            self.writer.wake()
            return
        self.close(CloseCode.TOO_SLOW, "client too slow: outgoing frames backed up")

    # -- the session -------------------------------------------------------------------------

    async def run(self, query: dict[str, str], auth: dict[str, Any]) -> Elsewhere | None:
        """Serve the client until it leaves; ``Elsewhere`` (nothing sent) if not the owner."""
        writer = self.writer
        moved: Elsewhere | None = None
        try:
            # Broadcasts go straight into the outbox as they are delivered: no queue of the
            # pub/sub's and no task to wake per client and message (fan-out to thousands).
            with self.objects.runtime.gateway.listen(self.topic, self.push):
                try:
                    await self._attach_and_read(query, auth)
                except Elsewhere as owner:
                    moved = owner
                finally:
                    self.inbox.cancel()
                    if self.conn is not None:
                        try:
                            await self.objects.runtime.gateway.detach(self.conn)
                        except Exception:  # the client is gone either way; say why in the log
                            log.exception("%s: on_disconnect failed", self.topic, extra=self.about)
        finally:
            if moved is not None:  # the websocket stays open for the relay
                writer.stop()
            else:
                self.close(CloseCode.NORMAL, "")
                try:
                    await asyncio.wait((writer.finished,), timeout=5)
                finally:  # (also when the server cancels this task: no watchdog left behind)
                    writer.stop()  # (done by then, unless a send still waits)
        return moved

    async def _attach_and_read(self, query: dict[str, str], auth: dict[str, Any]) -> None:
        try:
            conn = await self.objects.runtime.gateway.attach(
                self.cls, self.key, self, query=query, auth=auth, relayed=self.relayed
            )
        except Elsewhere:
            raise  # another node owns it: serve_websocket relays the client there
        except Moved as exc:  # relayed here, and this node is leaving: nothing ran
            self.close(CloseCode.RELOADED, f"{exc}; reconnect")
            return
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
                    self.inbox.error(None, INVALID_FRAME, "binary frames are not accepted: "
                                     "send each frame as JSON in a text frame")
                    continue
                self.inbox.handle(text)
        except WebSocketDisconnect:
            return

    def _attached(self, conn: Connection, state: list[str]) -> None:
        """Say so first, then the state, then what waited for the attach (on_connect's sends)."""
        self.conn = conn
        held, self.held = self.held or [], None
        payload: dict[str, Any] = {"connection": conn.id}
        if conn.presence_synced:  # the presence state waits among the held frames
            payload["presence"] = True
        self.push(encode_frame({"topic": self.topic, "event": ATTACHED, "payload": payload}))
        for item in [*state, *held]:
            self.push(item)
