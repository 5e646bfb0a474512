"""Sending a client's frames without a task per client: fan-out to thousands of sockets.

Each session queues its frames in its ``Outbox``; its ``Writer`` sends them in order. A writer
with frames to send joins its node's ``Flusher``: one task per loop round sends what every
ready writer holds. An ASGI send normally completes without waiting (the transport takes the
bytes), so the writer runs each send's coroutine by hand: when it finishes at once, the next
frame goes. Only a send that must wait (the network pushes back) gets a task, which finishes
it, then sends the rest of that client's frames; a slow client never holds up the others.

Why not a writer task per client, waiting on its queue: each wait made a future, an iterator
over it and coroutines, alive until the next broadcast. With 3,000 clients every young
collection promoted them all, and the full collections this caused (~250 ms each) were most
of the fan-out's p99 (benchmarks/README.md, issue 13).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from .outbox import Outbox
from .protocol import CloseCode

log = logging.getLogger("fastapi_objects")

_GONE = (WebSocketDisconnect, RuntimeError, OSError)  # the client is already gone


class Flusher:
    """The writers of one event loop that have frames to send, flushed once per loop round.

    A round is one task (not one per writer): code on the send path that asks for the
    current task (``asyncio.timeout`` in an ASGI middleware, say) finds one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._ready: list[Writer] = []
        self._round: asyncio.Task[None] | None = None  # (the loop holds tasks weakly)

    def schedule(self, writer: Writer) -> None:
        """Flush ``writer`` in the next round (one task for every writer of the round)."""
        if not self._ready:
            self._round = self.loop.create_task(self._flush(), name="objects-flush")
        self._ready.append(writer)

    async def _flush(self) -> None:
        ready, self._ready = self._ready, []
        for writer in ready:
            try:
                writer.flush()
            except Exception:  # one client's failure must not cost the others their frames
                log.exception("sending to a websocket client failed")
                writer.stop()


class Writer:
    """Sends one client's outbox in order; then closes the socket with ``close_with``.

    Its sends run in a context of their own, copied where the writer was made (the session's
    task), whichever task runs them: as each send ran in the session's writer task before,
    and so that a send begun in a round and finished in a task of its own sees one context
    (a middleware that sets a context variable around ``send`` resets it in the same one).
    ``close()`` ends it after what is queued; ``finished`` resolves once the close went out
    (or the client is gone, or ``stop()``).
    A watchdog, not a timer per frame, calls ``too_slow`` with the reason when a send has
    waited ``send_timeout`` seconds, and gives that send up.
    """

    __slots__ = ("_blocked", "_context", "_flusher", "_scheduled", "_send_timeout", "_too_slow",
                 "_watchdog", "close_with", "closing", "finished", "outbox", "sending_since",
                 "websocket")

    def __init__(
        self, flusher: Flusher, websocket: WebSocket, outbox: Outbox, send_timeout: float,
        too_slow: Callable[[str], None],
    ) -> None:
        self._flusher = flusher
        self.websocket = websocket
        self.outbox = outbox
        self.close_with: tuple[int, str] = (CloseCode.NORMAL, "")
        self.closing = False  # close() was called
        self.finished: asyncio.Future[None] = flusher.loop.create_future()
        self.sending_since: float | None = None  # when the send that waits began
        self._scheduled = False  # on the flusher's list, or a task of its own is sending
        self._blocked: asyncio.Task[None] | None = None
        self._send_timeout = send_timeout
        self._too_slow = too_slow
        self._watchdog = flusher.loop.call_later(send_timeout, self._watch)
        self._context = contextvars.copy_context()

    def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued (a client too slow: at once, dropping them).

        The first close wins; ``close_with`` is what the client gets.
        """
        if self.closing or self.finished.done():
            return
        self.closing = True
        self.close_with = (code, reason[:120])
        # A client too slow is not reading what waits: free that memory now.
        self.outbox.end(drop=code == CloseCode.TOO_SLOW)
        self.wake()

    def wake(self) -> None:
        """Frames were queued: send them in the next round (unless already on their way)."""
        if not self._scheduled and not self.finished.done():
            self._scheduled = True
            self._flusher.schedule(self)

    def flush(self) -> None:
        """Send what the outbox holds, until it is empty or a send must wait."""
        self._context.run(self._send_queued)

    def _send_queued(self) -> None:
        outbox = self.outbox
        while not outbox.empty and not self.finished.done():
            text = outbox.take()
            if text is None:
                code, reason = self.close_with
                if self._run(self.websocket.close(code, reason), closing=True):
                    self._finish()
                return
            if not self._run(self.websocket.send_text(text), closing=False):
                return
        self._scheduled = False

    @property
    def blocked(self) -> asyncio.Task[None] | None:
        """The task finishing a send that waits for the network, if one does."""
        return self._blocked

    def stop(self) -> None:
        """Send nothing more (the socket stays as it is: a relay takes it over, or it is gone)."""
        if self._blocked is not None:
            self._blocked.cancel()
        self._finish()

    def _watch(self) -> None:
        """Every ``send_timeout``: give up a send that has waited that long."""
        timeout, loop = self._send_timeout, self._flusher.loop
        since = self.sending_since
        if since is not None and loop.time() - since >= timeout:
            self._too_slow(f"client too slow: a frame was not taken within {timeout:g}s")
            if self._blocked is not None:
                self._blocked.cancel()  # it closes the socket with what too_slow set
            return
        wait = timeout if since is None else timeout - (loop.time() - since)
        self._watchdog = loop.call_later(wait, self._watch)

    def _run(self, send: Coroutine[Any, Any, None], closing: bool) -> bool:
        """Start ``send``; ``True`` when it finished at once (it waits in a task otherwise)."""
        try:
            waiting_on = send.send(None)
        except StopIteration:
            return True
        except _GONE:
            self._finish()
            return False
        self.sending_since = self._flusher.loop.time()
        self._blocked = self._flusher.loop.create_task(
            self._wait(send, waiting_on, closing), context=self._context
        )
        return False

    async def _wait(
        self, send: Coroutine[Any, Any, None], waiting_on: Any, closing: bool
    ) -> None:
        """Finish a send that had to wait, as a task would have run it; then go on sending."""
        try:
            while True:
                if waiting_on is None:  # a bare yield: one more round of the loop
                    await asyncio.sleep(0)
                else:  # what it waits for, however that ends (the send learns how)
                    await asyncio.wait((waiting_on,))
                waiting_on = send.send(None)
        except StopIteration:
            pass
        except asyncio.CancelledError:
            send.close()  # abandoned: a slow client, or the session moved away
            if not self.finished.done():
                await self._abort()
            raise
        except _GONE:
            self._finish()
            return
        except Exception:
            log.exception("sending to a websocket client failed")
            self._finish()
            return
        finally:
            self._blocked = None
            self.sending_since = None
        if closing:
            self._finish()
        elif self.outbox.empty and not self.finished.done():
            self._scheduled = False
        else:
            self._send_queued()  # (in this writer's context already)

    async def _abort(self) -> None:
        # The close frame queues behind what the client has not read (the server's
        # keep-alive pings end a client that never reads again).
        code, reason = self.close_with
        try:
            await self.websocket.close(code, reason)
        except _GONE:
            pass
        self._finish()

    def _finish(self) -> None:
        self._scheduled = True  # never scheduled again
        self._watchdog.cancel()
        if not self.finished.done():
            self.finished.set_result(None)
