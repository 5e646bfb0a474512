"""The websocket endpoints: a client attaching here, or relayed here by another node.

Each attached client is a ``session.Session`` (its frames are described there). A client
whose object another node owns is relayed to it, or answered with ``fly-replay``. Close codes
are ``protocol.CloseCode``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket

from .._exceptions import ConnectionRejected, InvalidKey, UnknownObjectType
from ..runtime.keys import validate_key
from ..runtime.routing import backoff
from .fly import REPLAY_STATUS, replay_target
from .protocol import CloseCode
from .relay import MOVED, relay
from .session import Session

if TYPE_CHECKING:
    from ..runtime.object import DurableObject
    from .objects import Objects

log = logging.getLogger("fastapi_objects")


async def serve_websocket(
    objects: Objects, websocket: WebSocket, cls: type[DurableObject[Any]] | str, key: str
) -> None:
    """Accept ``websocket``, check it, attach it to ``(cls, key)`` and serve it until it leaves."""
    refused: tuple[int, str] | None = None
    try:
        if isinstance(cls, str):
            cls = objects.runtime.object_type(cls)
            if not cls.public:  # built-in types (queues) are not for browsers
                raise UnknownObjectType(f"unknown object type {cls.type_name!r}")
        key = validate_key(key)
    except UnknownObjectType as exc:
        refused = (CloseCode.UNKNOWN_TYPE, exc.message)
    except InvalidKey as exc:
        refused = (CloseCode.INVALID_KEY, exc.message)
    if refused is None and not isinstance(cls, str):
        replay = replay_target(objects, cls, key, websocket.headers)
        if replay is not None and "websocket.http.response" in websocket.scope.get(
            "extensions", {}
        ):
            # Fly's proxy replays the upgrade on the owner's machine: no relay through here.
            await websocket.send({"type": "websocket.http.response.start",
                                  "status": REPLAY_STATUS,
                                  "headers": [(b"fly-replay", replay.encode())]})
            await websocket.send({"type": "websocket.http.response.body", "body": b""})
            return
    await websocket.accept()
    if refused is not None or isinstance(cls, str):
        code, reason = refused or (CloseCode.UNKNOWN_TYPE, "unknown type")
        await websocket.close(code, reason[:120])
        return
    origin = websocket.headers.get("origin")
    allowed = objects.allowed_origins
    if allowed is not None and "*" not in allowed and origin not in allowed:
        await websocket.close(CloseCode.FORBIDDEN, f"origin {origin!r} is not allowed"[:120])
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
            await websocket.close(CloseCode.UNAUTHORIZED, "unauthorized")
            return
        if isinstance(verdict, dict):
            params.update(verdict)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cls.call_timeout
    attempt = 0
    while True:
        owner = await Session(objects, websocket, cls, key).run(params)
        if owner is None or await relay(objects, websocket, cls, key, params, owner):
            return
        if loop.time() > deadline:  # the owner stayed unreachable (dying, not yet taken over)
            await websocket.close(CloseCode.ATTACH_FAILED, "attach failed: owner unreachable")
            return
        await backoff(attempt)
        attempt += 1


async def serve_relayed(
    objects: Objects, websocket: WebSocket, type_name: str, key: str, params: dict[str, Any]
) -> None:
    """The owner's end of a relayed client (checked on the node it connected to)."""
    await websocket.accept()
    try:
        cls = objects.runtime.object_type(type_name)
        key = validate_key(key)
    except UnknownObjectType as exc:
        await websocket.close(CloseCode.UNKNOWN_TYPE, exc.message[:120])
        return
    except InvalidKey as exc:
        await websocket.close(CloseCode.INVALID_KEY, exc.message[:120])
        return
    if await Session(objects, websocket, cls, key, relayed=True).run(params) is not None:
        await websocket.close(MOVED, "not the owner")


