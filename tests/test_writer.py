"""The websocket writer against an ASGI server's ``send`` that we control: the order of what it
sends, a send that has to wait, and the context every send runs in.

The end-to-end behaviour (real uvicorn, real clients, slow readers) is in tests/test_outbox.py,
tests/test_websocket_live.py and tests/test_relay_flow.py; here the server's end is a plain
ASGI ``send`` that can hold a send back and that, as a tracing middleware does, sets a context
variable around each send and resets it afterwards (which fails unless both happen in one
context).
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from starlette.websockets import WebSocket

from fastapi_objects import Objects
from fastapi_objects.fastapi.outbox import Outbox
from fastapi_objects.fastapi.session import Session
from fastapi_objects.fastapi.writer import Flusher, Writer
from tests._apps import Counter
from tests._support import wait_until

REQUEST: contextvars.ContextVar[str | None] = contextvars.ContextVar("request", default=None)
SPAN: contextvars.ContextVar[str | None] = contextvars.ContextVar("span", default=None)


class Server:
    """The ASGI server's end of one websocket: what was sent, in which context, and a gate."""

    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, Any], str | None, bool]] = []
        self.gate: asyncio.Future[None] | None = None

        self.connected = False

    async def receive(self) -> dict[str, Any]:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        await asyncio.get_running_loop().create_future()  # a client that never sends
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        token = SPAN.set(str(message.get("text")))
        try:
            in_task = asyncio.current_task() is not None
            if self.gate is not None:
                await self.gate  # the network pushes back
            self.sent.append((message, REQUEST.get(), in_task))
        finally:
            SPAN.reset(token)  # ValueError if this runs in another context than the set

    def texts(self) -> list[str | None]:
        return [m.get("text") for m, _, _ in self.sent if m["type"] == "websocket.send"]


async def test_sends_keep_their_order_and_context_when_one_has_to_wait() -> None:
    server = Server()
    websocket = WebSocket({"type": "websocket", "path": "/", "headers": []},
                          server.receive, server.send)
    await websocket.accept()
    outbox = Outbox(max_frames=100, max_size=10_000)
    REQUEST.set("the session's")
    writer = Writer(Flusher(asyncio.get_running_loop()), websocket, outbox, 30.0,
                    lambda reason: None)
    REQUEST.set("set later elsewhere")  # the writer's sends do not see it

    assert outbox.put("a")
    writer.wake()
    await wait_until(lambda: server.texts() == ["a"], what="a sent")
    server.gate = asyncio.get_running_loop().create_future()
    for text in ("b", "c"):
        assert outbox.put(text)
    writer.wake()
    await wait_until(lambda: writer.blocked is not None, what="b's send to wait")
    assert server.texts() == ["a"]
    assert outbox.put("d")
    writer.wake()  # (already on its way: the waiting send's task sends it)
    gate, server.gate = server.gate, None
    gate.set_result(None)
    await wait_until(lambda: server.texts() == ["a", "b", "c", "d"], what="the rest sent")
    assert writer.blocked is None

    writer.close(4000, "bye")
    await asyncio.wait_for(writer.finished, 5)
    closes = [m for m, _, _ in server.sent if m["type"] == "websocket.close"]
    assert closes == [{"type": "websocket.close", "code": 4000, "reason": "bye"}]
    after_accept = server.sent[1:]
    assert {context for _, context, _ in after_accept} == {"the session's"}
    assert all(in_task for _, _, in_task in after_accept)


async def test_a_session_cancelled_while_its_close_waits_leaves_no_writer_behind() -> None:
    """A server that cancels a session's task (its shutdown, past the grace period) while the
    close frame waits for the network: the writer is stopped, its waiting send given up."""
    server = Server()
    websocket = WebSocket({"type": "websocket", "path": "/", "headers": [],
                           "query_string": b""}, server.receive, server.send)
    await websocket.accept()
    async with Objects(objects=[Counter], database_url="memory://") as objects:
        session = Session(objects, websocket, Counter, "k")
        task = asyncio.create_task(session.run({}, {}))
        await wait_until(lambda: any("objects:attached" in str(t) for t in server.texts()),
                         what="the client attached")
        server.gate = asyncio.get_running_loop().create_future()  # sends wait from now on
        task.cancel()  # the session ends: it queues its close, which cannot leave
        await wait_until(lambda: session.writer.blocked is not None, what="the close to wait")
        task.cancel()  # and the server does not wait for it
        await asyncio.gather(task, return_exceptions=True)
        assert session.writer.finished.done()
        await wait_until(lambda: session.writer.blocked is None, what="the send given up")
