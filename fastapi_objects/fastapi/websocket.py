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
from ..runtime.gateway import backoff
from ..runtime.keys import validate_key
from .fly import REPLAY_STATUS, replay_target
from .origins import origin_allowed
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
    """Accept ``websocket``, check it, attach it to ``(cls, key)`` and serve it until it leaves.

    ``cls`` given by name (``objects.router``) must be ``public``; a class given by an app's
    own route is what that route exposes. Then the ``Origin`` (``origins.py``), then
    ``authorize``.
    """
    target, refused = _public_type(objects, cls) if isinstance(cls, str) else (cls, None)
    try:
        key = validate_key(key)
    except InvalidKey as exc:
        refused = refused or (CloseCode.INVALID_KEY, exc.message)
    if refused is None and target is not None:
        replay = replay_target(objects, target, key, websocket.headers)
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
    if refused is None and not origin_allowed(websocket.headers, objects.allowed_origins):
        refused = (CloseCode.FORBIDDEN, "origin not allowed: this page's site may not attach "
                   "(see allowed_origins)")
    if refused is not None or target is None:
        code, reason = refused or (CloseCode.UNKNOWN_TYPE, "unknown object type")
        await websocket.close(code, reason[:120])
        return
    query = dict(websocket.query_params)
    auth: dict[str, Any] = {}
    if objects.authorize is not None:
        try:
            verdict = objects.authorize(websocket, target.type_name, key)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except ConnectionRejected as exc:
            await websocket.close(exc.code, exc.message[:120])
            return
        if not verdict:
            await websocket.close(CloseCode.UNAUTHORIZED, "unauthorized")
            return
        if isinstance(verdict, dict):
            auth = dict(verdict)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + target.call_timeout
    attempt = 0
    while True:
        owner = await Session(objects, websocket, target, key).run(query, auth)
        if owner is None or await relay(objects, websocket, target, key, query, auth, owner):
            return
        if loop.time() > deadline:  # the owner stayed unreachable (dying, not yet taken over)
            await websocket.close(CloseCode.ATTACH_FAILED, "attach failed: owner unreachable")
            return
        await backoff(attempt)
        attempt += 1


def _public_type(
    objects: Objects, type_name: str
) -> tuple[type[DurableObject[Any]] | None, tuple[int, str] | None]:
    """The class a browser asked for by name, or why it may not attach to it.

    The reasons name no other type: a browser learns nothing about what else is registered.
    """
    try:
        cls = objects.runtime.object_type(type_name)
    except UnknownObjectType:
        return None, (CloseCode.UNKNOWN_TYPE, f"unknown object type {type_name[:40]!a}")
    if not cls.public:
        return None, (CloseCode.FORBIDDEN, f"object type {type_name!a} is not public: "
                      "browsers may not attach to it")
    return cls, None


async def serve_relayed(
    objects: Objects, websocket: WebSocket, type_name: str, key: str,
    query: dict[str, str], auth: dict[str, Any],
) -> None:
    """The owner's end of a relayed client (checked on the node it connected to).

    The relay is signed with the cluster secret: the edge node already checked the type's
    ``public``, the ``Origin`` and ``authorize``, and ``auth`` is what its ``authorize`` said.
    """
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
    session = Session(objects, websocket, cls, key, relayed=True)
    if await session.run(query, auth) is not None:
        await websocket.close(MOVED, "not the owner")
