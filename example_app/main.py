"""The example app's routes: pages, the stable counter API, rooms, the cart and a health check.

Stable for other tools: ``POST /counters/{key}/increment?by=N`` and ``GET /counters/{key}``
answer ``{"value": n}``; the websocket ``/objects/counter/{key}/ws`` speaks the standard frames;
``GET /`` is the HTML page; ``GET /healthz`` is what Fly.io checks.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from fastapi_objects import Handle, Objects, ObjectsError, get_object

from .objects import CATALOG, Cart, CartView, ChatMessage, ChatRoom, Counter

HERE = Path(__file__).parent
SESSION_COOKIE = "objects_demo_session"
ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
SUGGESTED_ROOMS = ("lounge", "python", "random")
HOME_COUNTER = "home"


def _valid_session(value: str | None) -> str | None:
    if value is not None and re.fullmatch(r"[A-Za-z0-9_-]{16,64}", value):
        return value
    return None


def session_id(conn: HTTPConnection) -> str:
    """The browser's session id: its cookie, or the one minted for this first request."""
    return _valid_session(conn.cookies.get(SESSION_COOKIE)) or str(conn.state.session_id)


def authorize(websocket: WebSocket, type_name: str, key: str) -> bool:
    """Anyone may attach to rooms and counters; a cart only to the session that owns it."""
    if type_name == Cart.type_name:
        return websocket.cookies.get(SESSION_COOKIE) == key
    return True


templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter()


def _runtime(request: Request) -> Objects:
    return request.app.state.objects  # type: ignore[no-any-return]  # set by objects.lifespan


Runtime = Annotated[Objects, Depends(_runtime)]
CounterHandle = Annotated[Handle[Counter], Depends(get_object(Counter))]
RoomHandle = Annotated[Handle[ChatRoom], Depends(get_object(ChatRoom, key="room"))]
CartHandle = Annotated[Handle[Cart], Depends(get_object(Cart, key=session_id))]


async def session_cookie(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Give each browser a random session id (the key of its ``Cart``)."""
    if _valid_session(request.cookies.get(SESSION_COOKIE)):
        return await call_next(request)
    request.state.session_id = secrets.token_urlsafe(18)
    response = await call_next(request)
    response.set_cookie(
        SESSION_COOKIE, request.state.session_id, max_age=30 * 24 * 3600,
        httponly=True, samesite="lax", secure=request.url.scheme == "https",
    )
    return response


# -- pages -----------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def index(request: Request, objects: Runtime) -> HTMLResponse:
    return templates.TemplateResponse(request, "index.html", {
        "rooms": await _rooms(objects), "suggested": SUGGESTED_ROOMS, "counter": HOME_COUNTER,
        "catalog": CATALOG, "cart_idle": Cart.idle_timeout, "room_idle": ChatRoom.idle_timeout,
    })


@router.get("/rooms/{room}", response_class=HTMLResponse)
async def room_page(request: Request, room: str) -> HTMLResponse:
    if ROOM_NAME.fullmatch(room) is None:
        raise HTTPException(404, "room names are 1-40 lowercase letters, digits and dashes")
    return templates.TemplateResponse(request, "room.html", {"room": room})


@router.get("/healthz")
async def healthz(objects: Runtime) -> JSONResponse:
    """Fly.io's health check: the app answers and its database (tables included) does too.

    It reads counts, no object's state: one broken object must not take the app out of service.
    """
    try:
        await objects.type_stats()
    except ObjectsError as exc:
        return JSONResponse({"ok": False, "error": exc.message}, status_code=503)
    return JSONResponse({"ok": True})


# -- counters (stable API) -------------------------------------------------------------------


@router.post("/counters/{key}/increment")
async def increment(counter: CounterHandle, by: int = 1) -> dict[str, int]:
    return {"value": await counter.increment(by)}


@router.get("/counters/{key}")
async def read_counter(counter: CounterHandle) -> dict[str, int]:
    return {"value": await counter.get()}


@router.get("/counters/{key}/events")
async def counter_events(counter: CounterHandle, request: Request) -> StreamingResponse:
    """The counter's broadcasts as Server-Sent Events, for clients that don't speak websocket.

    ``curl -N localhost:8000/counters/home/events`` prints a line per change. It subscribes to
    the object's topic only: it neither thaws nor keeps the counter awake.
    """
    objects = _runtime(request)
    topic = f"{Counter.type_name}:{counter.key}"

    async def stream() -> AsyncIterator[str]:
        async with objects.subscribe(topic) as sub:
            yield ": subscribed\n\n"  # sent at once, so clients know the stream is open
            async for message in sub:
                data = json.dumps(message.payload)
                yield f"event: {message.event}\ndata: {data}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


# -- rooms -----------------------------------------------------------------------------------


class RoomSummary(BaseModel):
    name: str
    status: str  # "active" (in memory) or "hibernated" (only in the database)
    posted: int
    last: ChatMessage | None


class NewMessage(BaseModel):
    name: str
    text: str


async def _rooms(objects: Objects) -> list[RoomSummary]:
    # Reads checkpoints straight from the database: listing rooms thaws none of them.
    page = await objects.query(ChatRoom, limit=50)
    rooms = [
        RoomSummary(
            name=cp.key, status=cp.status, posted=cp.state.get("posted", 0),
            last=(cp.state.get("messages") or [None])[-1],
        )
        for cp in page.items
        if isinstance(cp.state, dict)
    ]
    return sorted(rooms, key=lambda r: r.last.at if r.last else 0.0, reverse=True)


@router.get("/api/rooms")
async def list_rooms(objects: Runtime) -> list[RoomSummary]:
    return await _rooms(objects)


@router.get("/api/rooms/{room}/messages")
async def room_history(room: RoomHandle, limit: int = 50) -> list[ChatMessage]:
    return await room.history(limit=limit)


@router.post("/api/rooms/{room}/messages", status_code=201)
async def post_message(room: RoomHandle, message: NewMessage) -> ChatMessage:
    return await room.post(name=message.name, text=message.text)


# -- the cart of this browser's session ------------------------------------------------------


class NewItem(BaseModel):
    sku: str
    quantity: int = 1


@router.get("/api/cart")
async def view_cart(cart: CartHandle) -> CartView:
    return await cart.view()


@router.post("/api/cart/items")
async def add_to_cart(cart: CartHandle, item: NewItem) -> CartView:
    return await cart.add(sku=item.sku, quantity=item.quantity)


@router.delete("/api/cart/items/{sku}")
async def remove_from_cart(cart: CartHandle, sku: str) -> CartView:
    return await cart.remove(sku=sku)


# -- what the runtime is doing ---------------------------------------------------------------


@router.get("/api/stats")
async def stats(objects: Runtime) -> dict[str, Any]:
    """This node: objects in memory, and thaws, hibernations, forwarded calls since start."""
    s = objects.stats()
    stored = await objects.type_stats()
    return {
        "node": objects.node_id, "active": s.active, "thaws": s.thaws,
        "hibernations": s.hibernations, "turns": s.turns, "commits": s.commits,
        "forwarded": s.forwarded, "relayed": s.relayed, "takeovers": s.takeovers,
        "stored": [{"type": t.type, "status": t.status, "count": t.count} for t in stored],
    }


def create_app(database_url: str | None = None) -> FastAPI:
    """Build the app; ``database_url`` defaults to ``OBJECTS_DATABASE_URL``, then SQLite."""
    objects = Objects(
        objects=[ChatRoom, Counter, Cart],
        database_url=database_url,
        schema=os.environ.get("OBJECTS_SCHEMA") or None,
        authorize=authorize,
    )
    app = FastAPI(title="fastapi_objects example", lifespan=objects.lifespan)
    app.include_router(objects.router)  # websockets at /objects/{type}/{key}/ws, client.js
    app.include_router(router)
    app.middleware("http")(session_cookie)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app


app = create_app()
