"""The example app's routes: pages, the stable counter API, the cart and a health check.

Stable for other tools: ``POST /counters/{key}/increment?by=N`` and ``GET /counters/{key}``
answer ``{"value": n}``; the websocket ``/objects/counter/{key}/ws`` speaks the standard frames;
``GET /`` is the HTML page; ``GET /healthz`` is what Fly.io checks. The rooms' API is in
``rooms.py``, sessions in ``sessions.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from fastapi_objects import Handle, Objects, ObjectsError, get_object

from . import rooms
from .objects import CATALOG, Cart, CartView, ChatName, ChatRoom, Counter
from .rooms import RoomName, recent_rooms
from .sessions import SESSION_COOKIE, Runtime, runtime, session_cookie, session_id, session_of

__all__ = ["SESSION_COOKIE", "app", "create_app"]

HERE = Path(__file__).parent
SUGGESTED_ROOMS = ("lounge", "python", "random")
HOME_COUNTER = "home"
EMPTY_CART = CartView(lines=[], total_cents=0, wakeups=0)

templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter()
CounterHandle = Annotated[Handle[Counter], Depends(get_object(Counter))]
CartHandle = Annotated[Handle[Cart], Depends(get_object(Cart, key=session_id))]


# -- pages -----------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def index(request: Request, objects: Runtime) -> HTMLResponse:
    return templates.TemplateResponse(request, "index.html", {
        "rooms": await recent_rooms(objects), "suggested": SUGGESTED_ROOMS, "counter": HOME_COUNTER,
        "catalog": CATALOG, "cart_idle": Cart.idle_timeout, "room_idle": ChatRoom.idle_timeout,
    })


@router.get("/rooms/{room}", response_class=HTMLResponse)
async def room_page(request: Request, room: RoomName) -> HTMLResponse:
    return templates.TemplateResponse(request, "room.html", {"room": room})


@router.get("/healthz")
async def healthz(objects: Runtime) -> JSONResponse:
    """Fly.io's health check: the app answers and its database (tables included) does too.

    It reads counts, no object's state: one broken object must not take the app out of service.
    """
    try:
        await objects.type_stats()
    except ObjectsError as exc:  # an error id for the log; where the database is stays there
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
    objects = runtime(request)
    topic = f"{Counter.type_name}:{counter.key}"

    async def stream() -> AsyncIterator[str]:
        async with objects.subscribe(topic) as sub:
            yield ": subscribed\n\n"  # sent at once, so clients know the stream is open
            async for message in sub:
                data = json.dumps(message.payload)
                yield f"event: {message.event}\ndata: {data}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


# -- the cart of this browser's session ------------------------------------------------------


class NewItem(BaseModel):
    sku: str
    quantity: int = 1


async def _stored_cart(request: Request, objects: Objects) -> Handle[Cart] | None:
    """This browser's cart if it has one: a look that creates nothing (not even a session)."""
    session = session_of(request)
    if session is None:
        return None
    page = await objects.query(Cart, key_prefix=session, limit=1)
    if not page.items or page.items[0].key != session:
        return None
    return objects.get(Cart, session)


@router.get("/api/cart")
async def view_cart(request: Request, objects: Runtime) -> CartView:
    cart = await _stored_cart(request, objects)
    return EMPTY_CART if cart is None else await cart.view()


@router.post("/api/cart/items")
async def add_to_cart(cart: CartHandle, item: NewItem) -> CartView:
    return await cart.add(sku=item.sku, quantity=item.quantity)


@router.delete("/api/cart/items/{sku}")
async def remove_from_cart(request: Request, objects: Runtime, sku: str) -> CartView:
    cart = await _stored_cart(request, objects)
    return EMPTY_CART if cart is None else await cart.remove(sku=sku)


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
        objects=[ChatRoom, ChatName, Counter, Cart],
        database_url=database_url,
        schema=os.environ.get("OBJECTS_SCHEMA") or None,
        authorize=rooms.authorize,
    )
    app = FastAPI(title="fastapi_objects example", lifespan=objects.lifespan)
    app.include_router(objects.router)  # websockets at /objects/{type}/{key}/ws, client.js
    app.include_router(router)
    app.include_router(rooms.router)
    app.middleware("http")(session_cookie)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app


app = create_app()
