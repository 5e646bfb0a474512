"""The example app's durable objects: ``ChatRoom``, ``ChatName``, ``Counter`` and ``Cart``.

Each is a plain class: state is a pydantic model, public ``async def`` methods are callable
from routes (``Depends(get_object(...))``), and every turn that changed the state is committed
before its caller hears back. Browsers reach only what a class opens to them: ``public = True``
to attach over a websocket, ``@client_callable`` on each method a page may call.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from pydantic import BaseModel

from fastapi_objects import (
    Connection,
    ConnectionRejected,
    DurableObject,
    InvalidArguments,
    UnknownMethod,
    client_callable,
    readonly,
)


def idle_timeout(default: float) -> float:
    """Seconds idle before hibernating: ``EXAMPLE_IDLE_TIMEOUT`` overrides (tests use ~1 s)."""
    value = os.environ.get("EXAMPLE_IDLE_TIMEOUT")
    return float(value) if value else default


# -- Counter ---------------------------------------------------------------------------------


class CounterState(BaseModel):
    value: int = 0


class Counter(DurableObject[CounterState]):
    """A number everyone can bump; every change is broadcast to attached browsers."""

    idle_timeout = idle_timeout(30.0)
    public = True  # the home page attaches to it

    @client_callable
    async def increment(self, by: int = 1) -> int:
        self.state.value += by
        self.broadcast("changed", {"value": self.state.value})
        return self.state.value

    @readonly
    @client_callable
    async def get(self) -> int:
        return self.state.value


# -- ChatRoom --------------------------------------------------------------------------------

HISTORY_LIMIT = 200
MAX_TEXT = 500
MAX_NAME = 24


class ChatMessage(BaseModel):
    name: str
    text: str
    at: float  # unix seconds


class ChatRoomState(BaseModel):
    messages: list[ChatMessage] = []  # the last HISTORY_LIMIT messages
    posted: int = 0  # messages ever posted


class ChatRoom(DurableObject[ChatRoomState]):
    """A chat room: durable history; presence and typing live in the connections.

    Who is here and who is typing is not state worth a database write: each visitor is in the
    room's presence under their name (``conn.track``; one meta per tab), and whether they are
    typing is in their connection (``conn.state``); both vanish with the connection. Only
    messages are committed. A room whose visitors are idle hibernates with their sockets open;
    it comes back with its history, and with them (their presence and names) if they are still
    there. Pages follow the presence with the JS client's ``presence``.
    """

    idle_timeout = idle_timeout(30.0)
    public = True  # room pages attach to it

    async def on_connect(self, conn: Connection) -> None:
        # The app's authorize bound this name to the visitor's session (ChatName): it is
        # conn.auth, not the query string, which a client could fill with anyone's name.
        name = conn.auth.get("name")
        if not isinstance(name, str):
            raise ConnectionRejected("choose a name first", code=4403)
        conn.state = {"name": name, "typing": False}
        conn.tags.add("member")
        conn.track(name, {"connection": conn.id})  # every page (and tab) sees it join
        conn.send("welcome", {
            "you": conn.id,
            "history": [m.model_dump() for m in self.state.messages],
            "typing": self._typing(),
        })

    async def on_disconnect(self, conn: Connection) -> None:
        # Its presence leaves by itself; only the typing indicator needs telling.
        if conn.state.get("typing"):
            self.broadcast("typing", {"typing": self._typing()})

    async def on_message(self, conn: Connection, frame: dict[str, Any]) -> None:
        payload = frame.get("payload") or {}
        if frame["event"] == "typing":
            typing = bool(payload.get("on"))
            if typing != conn.state.get("typing"):
                conn.state = {**conn.state, "typing": typing}
                self.broadcast("typing", {"typing": self._typing()}, exclude=conn)
        elif frame["event"] == "say":
            was_typing = conn.state.get("typing")
            conn.state = {**conn.state, "typing": False}
            self._post(conn.state["name"], payload.get("text"))
            if was_typing:
                self.broadcast("typing", {"typing": self._typing()}, exclude=conn)
        else:
            raise UnknownMethod(f"chat rooms understand 'typing' and 'say', not {frame['event']!r}")

    async def post(self, name: str, text: str) -> ChatMessage:
        """Post as ``name`` without a websocket: for the HTTP API, which checked the name.

        Not ``@client_callable``: a websocket client posts with the ``say`` event, under the
        name its connection was given.
        """
        return self._post(check_name(name), text)

    @readonly
    @client_callable
    async def history(self, limit: int = 50) -> list[ChatMessage]:
        return self.state.messages[-limit:] if limit > 0 else []

    @readonly
    @client_callable
    async def present(self) -> list[str]:
        """The names in the room now (each may be there from several tabs)."""
        return sorted(self.presence.list(), key=str.lower)

    def _post(self, name: str, text: Any) -> ChatMessage:
        text = text.strip() if isinstance(text, str) else ""
        if not 1 <= len(text) <= MAX_TEXT:
            raise InvalidArguments(f"a message is 1 to {MAX_TEXT} characters")
        message = ChatMessage(name=name, text=text, at=time.time())
        self.state.messages = [*self.state.messages[-(HISTORY_LIMIT - 1):], message]
        self.state.posted += 1
        self.broadcast("message", message.model_dump())
        return message

    def _typing(self) -> list[dict[str, str]]:
        people = [
            {"id": c.id, "name": c.state["name"]}
            for c in self.connections(tag="member")
            if c.state.get("typing")
        ]
        return sorted(people, key=lambda p: (p["name"].lower(), p["id"]))


# -- ChatName --------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """A display name as shown: stripped, 1 to ``MAX_NAME`` characters (``InvalidArguments``)."""
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        raise InvalidArguments(f"a name is 1 to {MAX_NAME} printable characters")
    return name


def name_key(name: str) -> str:
    """The ``ChatName`` key of a display name: "Ann" and "ann " are one name."""
    return hashlib.sha256(name.strip().casefold().encode()).hexdigest()


class ChatNameState(BaseModel):
    session: str | None = None  # the session that holds the name


class ChatName(DurableObject[ChatNameState]):
    """A display name, held by the first session that used it: nobody else posts under it.

    Keyed by ``name_key(name)``; server code only (not public), called by the app's
    ``authorize`` and its HTTP API before they let a session speak as that name.
    """

    idle_timeout = idle_timeout(10.0)

    async def claim(self, session: str) -> bool:
        """Hold the name for ``session`` if nobody does; whether ``session`` holds it now."""
        if self.state.session is None:
            self.state.session = session
        return self.state.session == session


# -- Cart ------------------------------------------------------------------------------------

CATALOG: dict[str, tuple[str, int]] = {
    "espresso": ("Espresso", 250),
    "croissant": ("Croissant", 320),
    "cookie": ("Cookie", 180),
    "lemonade": ("Lemonade", 400),
}
"""sku -> (name, price in cents)."""


class CartState(BaseModel):
    items: dict[str, int] = {}  # sku -> quantity
    wakeups: int = 0  # times this cart was loaded into memory (first visit, then each thaw)


class CartLine(BaseModel):
    sku: str
    name: str
    quantity: int
    cents: int


class CartView(BaseModel):
    lines: list[CartLine]
    total_cents: int
    wakeups: int


class Cart(DurableObject[CartState]):
    """One shopper's cart, keyed by the session cookie: it sleeps when they do.

    After ``idle_timeout`` without a call the cart leaves memory (its state is already in
    the database); the next call thaws it, runs ``on_activate`` and carries on.
    """

    idle_timeout = idle_timeout(10.0)

    async def on_activate(self) -> None:
        self.state.wakeups += 1

    async def add(self, sku: str, quantity: int = 1) -> CartView:
        if sku not in CATALOG:
            raise InvalidArguments(f"unknown product {sku!r}; try one of {', '.join(CATALOG)}")
        if not 1 <= quantity <= 99:
            raise InvalidArguments("quantity must be between 1 and 99")
        self.state.items[sku] = min(99, self.state.items.get(sku, 0) + quantity)
        return self._view()

    async def remove(self, sku: str) -> CartView:
        self.state.items.pop(sku, None)
        return self._view()

    async def clear(self) -> CartView:
        self.state.items = {}
        return self._view()

    @readonly
    async def view(self) -> CartView:
        return self._view()

    def _view(self) -> CartView:
        lines = [
            CartLine(sku=sku, name=CATALOG[sku][0], quantity=qty, cents=CATALOG[sku][1] * qty)
            for sku, qty in sorted(self.state.items.items())
            if sku in CATALOG
        ]
        return CartView(
            lines=lines, total_cents=sum(line.cents for line in lines),
            wakeups=self.state.wakeups,
        )
