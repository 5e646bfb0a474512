"""A real uvicorn server on a free 127.0.0.1 port, in a background thread with its own loop.

Example::

    async with LiveServer(app) as server:
        async with websockets.asyncio.client.connect(server.ws_url("/objects/counter/a/ws")):
            ...
        page = await server.run(objects.query(Counter))   # runs on the server's loop

The server thread owns the app's event loop (the lifespan, the runtime, every websocket), so
the test's loop talks to it only through sockets, as a real client does; ``run`` hops a
coroutine over for the few checks that read the runtime itself.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

import uvicorn
from starlette.types import ASGIApp

T = TypeVar("T")

_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 15.0


class LiveServer:
    """uvicorn serving ``app`` on ``127.0.0.1:<free port>`` until the ``async with`` exits."""

    def __init__(self, app: ASGIApp, port: int = 0, **config: Any) -> None:
        # IPPROTO_TCP, as uvicorn's own bind_socket: asyncio turns Nagle off (TCP_NODELAY)
        # only for sockets made so, and with it on a reply that follows another frame waited
        # ~40 ms for the client's delayed ACK.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Bound before the thread starts, so the port is ours with no race to pick one
        # (``port`` reuses a stopped server's port, to restart "the same" server).
        self._sock.bind(("127.0.0.1", port))
        self.port: int = self._sock.getsockname()[1]
        options: dict[str, Any] = {
            "log_level": "warning", "lifespan": "on", "timeout_graceful_shutdown": 5,
            **config,
        }
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="live-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        """The ``ws://`` URL of ``path`` on this server."""
        return f"ws://127.0.0.1:{self.port}{path}"

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        try:
            loop.run_until_complete(self.server.serve(sockets=[self._sock]))
        except BaseException as exc:  # SystemExit when the lifespan fails to start
            self.error = exc
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def start(self) -> None:
        """Start the thread and wait until uvicorn accepts connections."""
        self._thread.start()
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"uvicorn did not start: {self.error!r}")
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"uvicorn did not start within {_START_TIMEOUT}s")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Ask uvicorn to exit (running the app's lifespan shutdown) and join the thread."""
        self.server.should_exit = True
        if self._thread.ident is not None:  # started (stop() after a failed start is fine)
            await asyncio.to_thread(self._thread.join, _STOP_TIMEOUT)
        self._sock.close()
        if self._thread.is_alive():
            raise RuntimeError(f"uvicorn did not stop within {_STOP_TIMEOUT}s")

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's event loop (where the runtime lives); return its result."""
        assert self.loop is not None, "the server is not running"
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class ServerFromSyncCode:
    """A ``LiveServer`` driven from synchronous code (a CLI test, Playwright's sync API).

    Example::

        served = ServerFromSyncCode(app)
        served.run(objects.get(Counter, "a").increment())   # on the server's loop
        served.stop()
    """

    def __init__(self, app: ASGIApp, **config: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = LiveServer(app, **config)
        self.url = self.server.url
        self.loop.run_until_complete(self.server.start())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's event loop and wait for its result.

        Straight to the server's thread: it works even where this thread runs a loop of its
        own (Playwright's sync API does).
        """
        assert self.server.loop is not None, "the server is not running"
        return asyncio.run_coroutine_threadsafe(coro, self.server.loop).result(timeout=60)

    def stop(self) -> None:
        """Stop the server (its lifespan shutdown runs) and close the driving loop."""
        try:
            self.loop.run_until_complete(self.server.stop())
        finally:
            self.loop.close()
