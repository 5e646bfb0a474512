"""The uvicorn server under the internal listener: quiet, and bounded against floods.

**Logging.** uvicorn's ``Config`` configures the process's logging as it is built:
``access_log=False`` empties the global ``uvicorn.access`` logger, so an app served by
uvicorn printed no access line once a node started. ``_Config`` leaves logging alone: the
internal listener changes no logging state of the process (the app's uvicorn owns it).

**Floods.** uvicorn sets no deadline on a request's headers and counts no connection before
its request is complete: a client that connects and sends half a request holds a file
descriptor for as long as it likes. Its ``limit_concurrency`` answers 503 only to complete
plain HTTP requests, never to a websocket upgrade, which is all this listener serves. So
``_Guarded`` adds both bounds on a connection that has not been upgraded yet: at most
``max_pending`` of them at once (one more is answered 503 and closed), each for at most
``handshake_timeout`` seconds. An upgraded connection is signed (``listener.py`` refuses the
rest at once) and belongs to a peer node or a relayed client: websocket pings watch it.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a connection may take to send its upgrade request (its first request, whole)."""

_REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


def default_max_pending() -> int:
    """Connections that may await their upgrade at once: 1/8 of the process's descriptors.

    Between 16 and 256: whoever floods the port can hold no more than that, each for at most
    ``HANDSHAKE_TIMEOUT``, and the app keeps the rest of its file descriptors.
    """
    try:
        import resource
    except ImportError:  # not on a POSIX system
        return 256
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 256
    return max(16, min(256, soft // 8))


class _Config(uvicorn.Config):
    """A ``uvicorn.Config`` that never touches the process's logging."""

    def configure_logging(self) -> None:
        """Do nothing: logging belongs to the app (and to the uvicorn serving it)."""


class _Guarded(H11Protocol):
    """uvicorn's HTTP protocol with a deadline and a cap on connections not yet upgraded.

    h11 rather than httptools: it always comes with uvicorn, and it only parses each
    connection's upgrade request here (the websocket protocol takes over after it).
    """

    pending: set[_Guarded]
    handshake_timeout: float
    max_pending: int

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Admit the connection if there is room, and start its handshake deadline."""
        super().connection_made(transport)
        if len(self.pending) >= self.max_pending:
            transport.write(_REFUSED)
            transport.close()
            return
        self.pending.add(self)
        self._deadline = asyncio.get_running_loop().call_later(
            self.handshake_timeout, self._expire
        )

    def handle_websocket_upgrade(self, *args: Any) -> None:
        """The request is whole and asks for a websocket: it is no longer pending."""
        self._settle()
        super().handle_websocket_upgrade(*args)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection (it may have closed before its deadline)."""
        self._settle()
        super().connection_lost(exc)

    def _settle(self) -> None:
        if self in self.pending:
            self.pending.discard(self)
            self._deadline.cancel()

    def _expire(self) -> None:
        # Still not upgraded: half a request, nothing at all, or plain HTTP kept alive.
        self.pending.discard(self)
        if not self.transport.is_closing():
            self.transport.abort()


async def start_server(
    app: Any, sock: socket.socket, *, max_frame: int, handshake_timeout: float | None = None,
    max_pending: int | None = None,
) -> uvicorn.Server:
    """Serve ``app`` on ``sock`` (already bound) until the caller stops the server.

    Only ``startup()``: ``serve()`` would take over the process's signals, and its main loop
    and ``shutdown()`` poll and log as if this were the app's own server.
    """
    pending = max_pending or default_max_pending()
    protocol = type("GuardedHTTP", (_Guarded,), {
        "pending": set(), "max_pending": pending,
        "handshake_timeout": handshake_timeout or HANDSHAKE_TIMEOUT,
    })
    config = _Config(
        app, lifespan="off", log_config=None, access_log=False, http=protocol,
        ws_max_size=max_frame, ws_per_message_deflate=False, limit_concurrency=pending,
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    return server
