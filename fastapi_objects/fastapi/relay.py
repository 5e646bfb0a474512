"""Websockets across nodes: a client attached on a node that does not own the object.

The edge node (where the client connected) checks the client as always (key, ``public``,
Origin, ``authorize``), then opens a signed websocket to the owner's internal listener and
relays frames both ways, unchanged. The owner's end (``/objects-internal/ws/...``) checks none
of those again: it rests on the signature alone (the cluster secret), as calls between nodes
do, and an unsigned or wrongly signed upgrade gets 401 and reaches nothing. The owner still
lets the client call only ``@client_callable`` methods. On the owner the client is an ordinary
session: ``on_connect``, ``on_message``, ``on_disconnect``, ``conn.state``, ``conn.send``,
calls and the ``objects:attached`` frame behave exactly as for a local client. When the owner
closes the session the client gets the same close code; when the owner dies mid-session the
client gets 1012 (reconnect) and, reconnecting, lands on the new owner.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from pydantic_core import from_json, to_json
from starlette.websockets import WebSocket, WebSocketDisconnect

from .._log import about
from ..cluster import Unauthorized
from ..cluster.listener import WEBSOCKET_PREFIX, Receive, Scope, Send
from ..cluster.signing import HEADER_CARRIED
from ..runtime.gateway import Elsewhere
from .outbox import Outbox
from .protocol import CloseCode
from .writer import Writer

if TYPE_CHECKING:
    from ..runtime.object import DurableObject
    from .objects import Objects

log = logging.getLogger("fastapi_objects")

MOVED = 4421
"""Close code between nodes only: the node asked does not own the object; look again."""


async def relay(
    objects: Objects,
    websocket: WebSocket,
    cls: type[DurableObject[Any]],
    key: str,
    query: dict[str, str],
    auth: dict[str, Any],
    owner: Elsewhere,
) -> bool:
    """Relay ``websocket`` to the owner's session until either side closes.

    Returns ``False`` when the owner could not be reached or no longer owns the object (the
    client saw nothing yet): the caller looks the owner up again.
    """
    import websockets
    from websockets.asyncio.client import connect

    gateway = objects.runtime.gateway
    # Both ride in a header signed with the upgrade: the owner trusts ``auth`` because only a
    # node could have signed it, and keeps it apart from the client's own ``query``. Not in
    # the URL: servers log upgrade URLs, and ``auth`` may name the user.
    carried = base64.urlsafe_b64encode(to_json({"query": query, "auth": auth})).decode()
    target = f"{WEBSOCKET_PREFIX}{cls.type_name}/{key}?"  # signed as the listener reads it
    headers = gateway.relay_headers(owner, target, carried)
    if headers is None or owner.address is None:
        gateway.forget_owner(cls, key)
        return False
    url = "ws" + owner.address.removeprefix("http") + target.removesuffix("?")
    try:
        upstream = await connect(url, additional_headers=headers, max_size=None, open_timeout=5)
    except (OSError, TimeoutError, websockets.InvalidHandshake, Unauthorized) as exc:
        log.info("relay of %s:%s to %s failed: %r", cls.type_name, key, owner.node_id, exc,
                 extra=about(cls.type_name, key, objects.node_id))
        gateway.forget_owner(cls, key)
        return False
    async with upstream:
        try:
            first = await upstream.recv()
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else CloseCode.RELOADED
            if code == MOVED:
                gateway.forget_owner(cls, key)
                return False
            await _close(websocket, code, closed.rcvd.reason if closed.rcvd else "")
            return True
        await _pump(objects, websocket, upstream, str(first))
    return True


async def _pump(objects: Objects, websocket: WebSocket, upstream: Any, first: str) -> None:
    """Relay frames both ways until either side closes.

    Towards the client, frames go through an outbox and a writer as a local session's do
    (``writer.py``): no task and no timer per frame, and the same ``send_timeout`` for a
    client that stops reading. While a send waits, nothing more is read from the owner.
    """
    import websockets

    outbox = Outbox(objects.max_outbox, objects.max_outbox_bytes)
    writer = Writer(objects.flusher(), websocket, outbox, objects.send_timeout,
                    lambda reason: writer.close(CloseCode.TOO_SLOW, reason))
    outbox.put(first)
    writer.wake()

    async def client_to_owner() -> None:
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                await upstream.send(text if text is not None else message.get("bytes", b""))
        except (WebSocketDisconnect, websockets.ConnectionClosed):
            return

    async def owner_to_client() -> tuple[int, str]:
        try:
            async for frame in upstream:  # (the owner sends JSON text frames only)
                text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
                if writer.finished.done():
                    return (CloseCode.NORMAL, "")  # the client is gone (or was too slow)
                if not outbox.put(text):
                    return (CloseCode.TOO_SLOW, "client too slow: outgoing frames backed up")
                writer.wake()
                # While the client's network pushes back, read no more: the owner's session
                # holds what waits, within its limits, as for a client of its own.
                while (blocked := writer.blocked) is not None:
                    await asyncio.wait((blocked,))
        except websockets.ConnectionClosedError:
            pass  # the owner went away without a close: it died or was cut off
        received = upstream.close_code
        if received is None or received == 1006:
            return (CloseCode.RELOADED, "the object's node went away; reconnect")
        return (received, upstream.close_reason or "")

    up = asyncio.create_task(client_to_owner())
    down = asyncio.create_task(owner_to_client())
    try:
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        if down in done:
            up.cancel()
            writer.close(*down.result())
            await asyncio.wait((writer.finished,), timeout=5)
        else:
            await upstream.close()
    finally:  # (also when the server cancels this task: nothing left running behind it)
        writer.stop()
        up.cancel()
        down.cancel()
        await asyncio.gather(up, down, return_exceptions=True)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await websocket.close(code, reason[:120])
    except (RuntimeError, OSError):
        pass  # already closed


def internal_websocket_app(objects: Objects) -> Any:
    """The owner's end of a relay: the internal listener hands it signed upgrades.

    Also the owner's end of the inspector's live view (``?watch=1``: ``inspector/live.py``).
    """
    from .inspector.live import WATCH, serve_watch
    from .websocket import serve_relayed

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        type_name, _, key = scope["path"][len(WEBSOCKET_PREFIX):].partition("/")
        if WATCH in parse_qs(scope.get("query_string", b"").decode("latin-1")):
            # The inspector's live view of another node: no client attaches.
            await serve_watch(objects, websocket, type_name, key)
            return
        carried = _carried(websocket.headers.get(HEADER_CARRIED, ""))
        query = {str(k): str(v) for k, v in _object(carried.get("query")).items()}
        auth = _object(carried.get("auth"))
        await serve_relayed(objects, websocket, type_name, key, query, auth)

    return app


def _carried(header: str) -> dict[str, Any]:
    """The relayed client's ``query`` and ``auth`` (signed with the upgrade: nodes made it)."""
    try:
        value = from_json(base64.urlsafe_b64decode(header)) if header else {}
    except ValueError:
        return {}
    return _object(value)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
