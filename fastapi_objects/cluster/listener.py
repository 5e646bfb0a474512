"""Each node's internal listener: forwarded calls (and relayed websockets) from other nodes.

A small ASGI app served by uvicorn inside the node's process, on ``internal_host`` and
``internal_port`` (port 0: a free one, so every worker of ``uvicorn --workers N`` has its
own). It takes websockets only: call channels from other nodes (``channel.py``) and relayed
client sessions, handed to ``websocket_app`` (the web integration's relay endpoint). Every
upgrade must be signed (``signing.py``); an unsigned, wrongly signed, stale or replayed one is
answered 401 and opens nothing. The uvicorn under it (``_uvicorn.py``) touches none of the
app's logging and bounds the connections that have not upgraded yet.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic_core import to_json

from .._exceptions import ObjectsError
from .._log import about
from .channel import CHANNEL_PATH, MAX_FRAME, ChannelServer
from .forward import Moved
from .signing import HEADER_CARRIED, Misdirected, Signer, Unauthorized

log = logging.getLogger("fastapi_objects")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
CallHandler = Callable[[str, str, str, dict[str, Any], dict[str, str] | None], Awaitable[Any]]
"""``(type, key, method, args, trace)``: run a forwarded call (``trace``: the caller's trace
context as W3C headers, if it sent one); its JSON result."""

WEBSOCKET_PREFIX = "/objects-internal/ws/"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Listener:
    """The internal ASGI app and the uvicorn server that serves it."""

    def __init__(
        self, host: str, port: int, signer: Signer, handle_call: CallHandler,
        websocket_app: ASGIApp | None = None, *, handshake_timeout: float | None = None,
        max_pending: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.signer = signer
        self.handle_call = handle_call
        self.websocket_app = websocket_app
        # Bounds on connections not upgraded yet (None: _uvicorn.py's defaults).
        self.handshake_timeout = handshake_timeout
        self.max_pending = max_pending
        self.leaving = False  # a node shutting down answers 421: callers look again
        self._channels: set[ChannelServer] = set()
        self._server: Any = None
        self._sock: socket.socket | None = None

    # -- serving -----------------------------------------------------------------------------

    async def start(self) -> str:
        """Bind, serve, and return the address other nodes use (``http://host:port``)."""
        from ._uvicorn import start_server

        host = await _resolve(self.host)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, self.port))
        sock.set_inheritable(False)
        self._sock = sock
        port = sock.getsockname()[1]
        self._server = await start_server(
            self, sock, max_frame=MAX_FRAME, handshake_timeout=self.handshake_timeout,
            max_pending=self.max_pending,
        )
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        return f"http://{shown}:{port}"

    async def stop(self) -> None:
        """Stop serving: no new connections; channels answer what they started, then close.

        A channel closes with ``LEAVING`` only once every call it started has been answered,
        so its peer knows that the calls still waiting did not run.
        """
        server, self._server = self._server, None
        if server is None:
            return
        for listening in server.servers:
            listening.close()
        await asyncio.gather(*(channel.leave() for channel in list(self._channels)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        for connection in list(server.server_state.connections):
            try:
                connection.shutdown()
            except Exception:
                # uvicorn's websockets-sansio sends a close on a connection whose peer is
                # already closing it and raises InvalidState: that one needs only to end.
                transport = getattr(connection, "transport", None)
                if transport is not None:
                    transport.close()
        while server.server_state.connections and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # uvicorn has no event for "last connection closed"
        for task in server.server_state.tasks:
            task.cancel()
        for listening in server.servers:
            await listening.wait_closed()
        if self._sock is not None:
            self._sock.close()

    # -- the ASGI app ------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one internal connection: a signed websocket upgrade."""
        if scope["type"] == "http":
            message = "the internal listener takes signed websockets only"
            await _reply(send, 404, {"error": {"type": "not_found", "message": message}})
            return
        if scope["type"] != "websocket":
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        target = scope["path"] + "?" + scope.get("query_string", b"").decode("latin-1")
        try:
            self.signer.verify("GET", target, headers.get(HEADER_CARRIED, "").encode(), headers)
        except Unauthorized as exc:
            status = 421 if isinstance(exc, Misdirected) else 401
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "websocket.http.response.body", "body": str(exc).encode()})
            return
        if scope["path"] == CHANNEL_PATH:
            channel = ChannelServer(self._call)
            if self.leaving:
                channel.closing = True
            self._channels.add(channel)
            try:
                await channel.serve(receive, send)
            finally:
                self._channels.discard(channel)
            return
        if self.websocket_app is None or not scope["path"].startswith(WEBSOCKET_PREFIX):
            await send({"type": "websocket.close", "code": 4404})
            return
        await self.websocket_app(scope, receive, send)

    async def _call(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            type, key = str(request["type"]), str(request["key"])
            method, args = str(request["method"]), request["args"]
            if not isinstance(args, dict):
                raise TypeError("args must be an object")
            trace = request.get("trace")
            if trace is not None and not (
                isinstance(trace, dict) and all(isinstance(v, str) for v in trace.values())
            ):
                raise TypeError("trace must be an object of strings")
        except (ValueError, KeyError, TypeError) as exc:
            return 400, {"error": {"type": "invalid_frame", "message": f"bad call: {exc}"}}
        if self.leaving:
            return 421, {"error": {"type": "moved", "message": "this node is leaving"}}
        try:
            result = await self.handle_call(type, key, method, args, trace)
        except Moved as exc:
            moved = {"type": "moved", "message": str(exc), "owner": exc.owner,
                     "address": exc.address}
            return 421, {"error": moved}
        except ObjectsError as exc:
            error: dict[str, Any] = {"type": exc.type, "message": exc.message}
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                error["retry_after"] = retry_after
            return 200, {"ok": False, "error": error}
        except Exception as exc:
            error_id = uuid.uuid4().hex[:16]
            log.error("internal error %s in forwarded %s:%s.%s()", error_id, type, key, method,
                      exc_info=exc, extra=about(type, key, self.signer.node_id))
            return 200, {"ok": False, "error": {"type": "internal_error",
                                                "message": f"internal error {error_id}"}}
        return 200, {"ok": True, "result": result}


async def _resolve(host: str) -> str:
    """An IP address for ``host``: other nodes are given an address, not a local name.

    On Fly.io ``fly-local-6pn`` names the machine's private IPv6 address; ``localhost`` is
    127.0.0.1.
    """
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"cannot resolve OBJECTS_INTERNAL_HOST={host!r}")
    return str(infos[0][4][0])


async def _reply(send: Send, status: int, body: dict[str, Any], close: bool = False) -> None:
    data = to_json(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
