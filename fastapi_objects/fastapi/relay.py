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
from .protocol import CloseCode

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
        await websocket.send_text(str(first))
        await _pump(websocket, upstream, objects.send_timeout)
    return True


async def _pump(websocket: WebSocket, upstream: Any, send_timeout: float) -> None:
    import websockets

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
            async for frame in upstream:
                # A client that stops reading is closed here too: else this relay would wait
                # on it for good, and the owner's close (4408) would never get through.
                sent = websocket.send_bytes(frame) if isinstance(frame, bytes) else (
                    websocket.send_text(frame))
                await asyncio.wait_for(sent, send_timeout)
        except TimeoutError:
            return (CloseCode.TOO_SLOW, "client too slow: a frame was not taken in time")
        except websockets.ConnectionClosedError:
            pass  # the owner went away without a close: it died or was cut off
        except (WebSocketDisconnect, RuntimeError, OSError):
            return (CloseCode.NORMAL, "")
        received = upstream.close_code
        if received is None or received == 1006:
            return (CloseCode.RELOADED, "the object's node went away; reconnect")
        return (received, upstream.close_reason or "")

    up = asyncio.create_task(client_to_owner())
    down = asyncio.create_task(owner_to_client())
    done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
    if down in done:
        up.cancel()
        code, reason = down.result()
        await _close(websocket, code, reason)
    else:
        await upstream.close()
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
