"""Chat rooms over HTTP and who may speak in them: room names, display names, the list.

A room's key follows the room-name rule everywhere (pages, API, websockets). A display name
belongs to the first session that uses it (``ChatName``), as a cart belongs to its session:
the websocket's ``authorize`` and ``POST /api/rooms/{room}/messages`` both check it, and a
room takes the name from ``conn.auth``, never from what a client says.
"""

from __future__ import annotations

import heapq
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from pydantic import BaseModel
from starlette.websockets import WebSocket

from fastapi_objects import ConnectionRejected, Handle, InvalidArguments, Objects

from .objects import ChatMessage, ChatName, ChatRoom, Counter, check_name, name_key
from .sessions import Runtime, runtime, session_id, session_of

ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
ROOM_RULE = "room names are 1-40 lowercase letters, digits and dashes"
ROOMS_SHOWN = 20  # the home page lists the rooms with the latest messages...
ROOMS_RECENT = timedelta(days=1)  # ...among those written lately...
ROOMS_SCANNED = 2_000  # ...reading at most this many (bounded, however many rooms exist)

router = APIRouter()


class NameTaken(Exception):
    """The display name belongs to another session."""


async def speak_as(objects: Objects, session: str, name: str) -> str:
    """``name`` (checked) once ``session`` holds it; ``NameTaken`` if another session does."""
    name = check_name(name)
    if not await objects.get(ChatName, name_key(name)).claim(session):
        raise NameTaken(f"the name {name!r} belongs to another visitor: choose another")
    return name


async def authorize(websocket: WebSocket, type_name: str, key: str) -> bool | dict[str, str]:
    """Who may attach: the counter, anyone; a room, a session speaking as a name it holds.

    The name comes back as ``conn.auth["name"]``: a room trusts that, never the query string.
    """
    if type_name != ChatRoom.type_name:
        return type_name == Counter.type_name
    if ROOM_NAME.fullmatch(key) is None:
        raise ConnectionRejected(ROOM_RULE, code=4400)
    session = session_of(websocket)
    if session is None:
        raise ConnectionRejected("no session: load the room's page first", code=4401)
    try:
        name = await speak_as(runtime(websocket), session, websocket.query_params.get("name", ""))
    except (InvalidArguments, NameTaken) as exc:
        raise ConnectionRejected(str(exc), code=4403) from None
    return {"name": name}


def room_name(room: Annotated[str, PathParam(description=ROOM_RULE, max_length=40)]) -> str:
    """The ``{room}`` of a path, if it follows the room-name rule (else 404)."""
    if ROOM_NAME.fullmatch(room) is None:
        raise HTTPException(404, ROOM_RULE)
    return room


RoomName = Annotated[str, Depends(room_name)]


def _room(request: Request, room: RoomName) -> Handle[ChatRoom]:
    return runtime(request).get(ChatRoom, room)


RoomHandle = Annotated[Handle[ChatRoom], Depends(_room)]


class RoomSummary(BaseModel):
    name: str
    status: str  # "active" (in memory) or "hibernated" (only in the database)
    posted: int
    last: ChatMessage | None


class NewMessage(BaseModel):
    name: str  # a name this browser's session holds (or takes now, if nobody does)
    text: str


async def recent_rooms(objects: Objects) -> list[RoomSummary]:
    """The rooms with the latest messages, newest first.

    Reads checkpoints straight from the database (listing rooms thaws none of them), only
    those written lately, and keeps the ``ROOMS_SHOWN`` with the most recent messages: rooms
    whose names sort first, or that never had a message, push no active room off the list.
    """
    since = datetime.now(UTC) - ROOMS_RECENT
    found: list[RoomSummary] = []
    cursor: str | None = None
    for _ in range(ROOMS_SCANNED // 500):
        page = await objects.query(ChatRoom, updated_after=since, limit=500, cursor=cursor)
        for cp in page.items:
            state = cp.state if isinstance(cp.state, dict) else {}
            if state.get("messages") and ROOM_NAME.fullmatch(cp.key):
                found.append(RoomSummary(name=cp.key, status=cp.status,
                                         posted=state.get("posted", 0),
                                         last=state["messages"][-1]))
        found = heapq.nlargest(ROOMS_SHOWN, found, key=lambda r: r.last.at if r.last else 0.0)
        cursor = page.next_cursor
        if cursor is None:
            break
    return found


@router.get("/api/rooms")
async def list_rooms(objects: Runtime) -> list[RoomSummary]:
    return await recent_rooms(objects)


@router.get("/api/rooms/{room}/messages")
async def room_history(room: RoomHandle, limit: int = 50) -> list[ChatMessage]:
    return await room.history(limit=limit)


@router.post("/api/rooms/{room}/messages", status_code=201)
async def post_message(
    request: Request, room: RoomHandle, message: NewMessage, objects: Runtime
) -> ChatMessage:
    """Post as ``name``: a name this browser's session holds, or takes now if it is free."""
    try:
        name = await speak_as(objects, session_id(request), message.name)
    except NameTaken as exc:
        raise HTTPException(403, str(exc)) from None
    return await room.post(name=name, text=message.text)
