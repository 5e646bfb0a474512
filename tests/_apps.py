"""Small apps shared by the integration tests (DESIGN section 1, as written)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI
from pydantic import BaseModel

from fastapi_objects import (
    Connection,
    ConnectionRejected,
    DurableObject,
    Handle,
    Objects,
    client_callable,
    get_object,
    readonly,
)


class CounterState(BaseModel):
    value: int = 0


class Counter(DurableObject[CounterState]):
    idle_timeout = 30.0
    public = True

    @client_callable
    async def increment(self, by: int = 1) -> int:
        self.state.value += by
        self.broadcast("changed", {"value": self.state.value})
        return self.state.value

    @readonly
    @client_callable
    async def get(self) -> int:
        return self.state.value

    async def admin_reset(self) -> int:
        """For server routes only: not ``@client_callable``."""
        self.state.value = 0
        self.broadcast("changed", {"value": 0})
        return 0

    @client_callable
    async def fail(self) -> None:
        self.state.value += 1000
        self.broadcast("changed", {"value": self.state.value})
        raise ValueError("refused on purpose")

    @client_callable
    async def slow(self, seconds: float) -> str:
        """Hold the turn for ``seconds``, or until ``release_slow`` lets it go."""
        ident = f"{self.objects.node_id}/{self.key}"
        SLOW_RUNNING.add(ident)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_RELEASE.setdefault(ident, asyncio.Event()).wait(), seconds)
        finally:
            SLOW_RUNNING.discard(ident)
        return "done"


# "{node_id}/{key}" of each Counter whose slow() is running now: lets a test wait until a
# call holds an object's turn instead of guessing with a sleep.
SLOW_RUNNING: set[str] = set()
_RELEASE: dict[str, asyncio.Event] = {}


def release_slow(node_id: str, key: str) -> None:
    """End every running and future ``slow()`` of ``key`` on that node (call it on its loop)."""
    _RELEASE.setdefault(f"{node_id}/{key}", asyncio.Event()).set()


class TimedCounter(Counter):
    """A Counter whose calls time out quickly (for the 504 mapping)."""

    call_timeout = 0.2


class NarrowCounter(Counter):
    """A Counter with room for one waiting call (for the 503 Overloaded mapping)."""

    max_queue = 1


class RoomState(BaseModel):
    messages: list[str] = []


class Room(DurableObject[RoomState]):
    """Rejects clients without a name; keeps presence in connection state."""

    idle_timeout = 0.3
    public = True

    async def on_connect(self, conn: Connection) -> None:
        name = conn.auth.get("name") or conn.query.get("name")
        if not name:
            raise ConnectionRejected("a name is required", code=4403)
        conn.state = {"name": name}
        conn.tags.add("member")
        conn.send("welcome", {"history": self.state.messages})
        self.broadcast("joined", {"name": name, "present": self._present()})

    async def on_disconnect(self, conn: Connection) -> None:
        self.broadcast("left", {"name": conn.state.get("name"), "present": self._present()})

    async def on_message(self, conn: Connection, frame: dict[str, Any]) -> None:
        if frame["event"] == "typing":
            self.broadcast("typing", {"name": conn.state["name"]}, exclude=conn)

    @client_callable
    async def say(self, text: str) -> int:
        self.state.messages.append(text)
        self.broadcast("message", {"text": text})
        return len(self.state.messages)

    @readonly
    @client_callable
    async def history(self) -> list[str]:
        return self.state.messages

    def _present(self) -> list[str]:
        return sorted(c.state.get("name", "?") for c in self.connections(tag="member"))


def make_app(database_url: str, **options: Any) -> tuple[FastAPI, Objects]:
    objects = Objects(
        objects=[Counter, Room, TimedCounter, NarrowCounter], database_url=database_url, **options
    )
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)

    @app.post("/counters/{key}/increment")
    async def increment(
        counter: Annotated[Handle[Counter], Depends(get_object(Counter))], by: int = 1
    ) -> dict[str, int]:
        return {"value": await counter.increment(by)}

    @app.get("/counters/{key}")
    async def read(
        counter: Annotated[Handle[Counter], Depends(get_object(Counter))],
    ) -> dict[str, int]:
        return {"value": await counter.get()}

    @app.post("/counters/{key}/fail")
    async def fail(counter: Annotated[Handle[Counter], Depends(get_object(Counter))]) -> None:
        await counter.fail()

    @app.post("/counters/{key}/call/{method}")
    async def call(
        counter: Annotated[Handle[Counter], Depends(get_object(Counter))],
        method: str,
        args: Annotated[dict[str, Any] | None, Body()] = None,
    ) -> dict[str, Any]:
        """Call any method by name, as a websocket frame does (for the 422 mappings)."""
        return {"result": await counter.call(method, args)}

    @app.post("/timed/{key}/slow")
    async def timed_slow(
        counter: Annotated[Handle[TimedCounter], Depends(get_object(TimedCounter))],
        seconds: float,
    ) -> dict[str, str]:
        return {"result": await counter.slow(seconds)}

    @app.post("/narrow/{key}/slow")
    async def narrow_slow(
        counter: Annotated[Handle[NarrowCounter], Depends(get_object(NarrowCounter))],
        seconds: float,
    ) -> dict[str, str]:
        return {"result": await counter.slow(seconds)}

    @app.post("/narrow/{key}/increment")
    async def narrow_increment(
        counter: Annotated[Handle[NarrowCounter], Depends(get_object(NarrowCounter))],
    ) -> dict[str, int]:
        return {"value": await counter.increment()}

    @app.get("/plain")
    async def plain() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/list")
    async def listing(
        limit: int = 100, cursor: str | None = None, status: str | None = None
    ) -> dict[str, Any]:
        """List counters as an admin page would: the query's own checks answer bad input."""
        page = await objects.query(Counter, limit=limit, cursor=cursor, status=status)
        return {"keys": [cp.key for cp in page.items], "next": page.next_cursor}

    return app, objects
