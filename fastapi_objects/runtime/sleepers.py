"""Clients of hibernated objects: their sockets stay open while the object is out of memory.

An object whose class sleeps with its clients (``hibernate_with_clients``, the default)
hibernates after ``idle_timeout`` without turns, attached clients or not, as Cloudflare's
WebSocket Hibernation does. Its ``Connection`` objects (with ``state``, ``tags`` and whatever
else rides on them) stay with their sessions, here, unchanged: nothing is copied or encoded.
The session keeps listening to the object's topic, so broadcasts still reach the socket.

The next thaw of the object on this node, whatever causes it (a client frame, a call, an
alarm, an HTTP request), puts the same connections back among its clients before
``on_activate``, without ``on_connect``. A frame of a sleeping client wakes the object on
this node first (its claim ignores placement: the sockets are here); if another node holds it
by then, every sleeping client of it here is closed 1012 (reconnect) and the frame does not
run. A sleeping client that leaves wakes the object to run ``on_disconnect``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from .._exceptions import ObjectsError
from .connection import CloseCode
from .routing import Elsewhere

if TYPE_CHECKING:
    from .activation import Activation
    from .calls import OnLive
    from .connection import Connection
    from .object import DurableObject

log = logging.getLogger("fastapi_objects")
R = TypeVar("R")
Here = Callable[["Activation", bool], Awaitable[R]]


class Gone(Exception):
    """The connection does not sleep here: it was closed, or another node holds its object."""


def sleeps_with_clients(cls: type[DurableObject[Any]]) -> bool:
    """Whether an object of ``cls`` may hibernate with clients attached.

    ``hibernate_with_clients`` says so, except for memory objects (hibernating ends them: it
    would drop their state under their clients) and expiring ones (a node that did not see
    the sleeping clients could take them for gone and delete the object).
    """
    return bool(
        cls.hibernate_with_clients and cls.persistence == "durable" and cls.expire_after is None
    )


class _Room:
    """The sleeping connections of one hibernated object, and which object it is."""

    __slots__ = ("cls", "conns", "key")

    def __init__(self, cls: type[DurableObject[Any]], key: str) -> None:
        self.cls = cls
        self.key = key
        self.conns: dict[str, Connection] = {}


class Sleepers:
    """This node's connections whose objects hibernated, by topic, until each thaws here."""

    def __init__(self, on_live: OnLive, serving: Callable[[], bool]) -> None:
        self._on_live = on_live
        self._serving = serving  # whether this node may serve (its lease is valid)
        self._rooms: dict[str, _Room] = {}
        self.count = 0

    def keep(self, act: Activation, conns: Iterable[Connection]) -> None:
        """``act`` hibernated: its clients wait here, detached from it."""
        conns = list(conns)
        if not conns:
            return
        room = self._rooms.get(act.topic)
        if room is None:
            room = self._rooms[act.topic] = _Room(act.cls, act.key)
        for conn in conns:
            conn.activation = None
            if conn.id not in room.conns:
                room.conns[conn.id] = conn
                self.count += 1

    def rejoin(self, act: Activation) -> None:
        """``act`` is thawing: put its sleeping clients back (no ``on_connect``)."""
        room = self._rooms.pop(act.topic, None)
        if room is not None:
            self.count -= len(room.conns)
            clients = act.attached()
            for conn in room.conns.values():
                clients.rejoin(conn)

    def asleep(self, conn: Connection) -> bool:
        """Whether ``conn`` waits for its object to thaw."""
        room = self._rooms.get(conn.topic)
        return room is not None and conn.id in room.conns

    def listed(self, topic: str) -> list[Connection]:
        """The connections waiting here for the object of ``topic`` to thaw."""
        room = self._rooms.get(topic)
        return [] if room is None else list(room.conns.values())

    def forget(self, conn: Connection) -> None:
        """``conn`` left without its object waking (it moved, or this node is leaving)."""
        room = self._rooms.get(conn.topic)
        if room is not None and room.conns.pop(conn.id, None) is not None:
            self.count -= 1
            if not room.conns:
                del self._rooms[conn.topic]

    async def run(self, conn: Connection, here: Here[R]) -> R:
        """Run ``here(activation, held)`` on ``conn``'s object, thawing it on this node.

        The thaw puts ``conn`` back among its clients. ``Gone`` when ``conn`` does not
        sleep here (it was closed), or when another node holds the object now: then every
        sleeping client of that object here is closed 1012, to reconnect to it.
        """
        room = self._rooms.get(conn.topic)
        if room is None or conn.id not in room.conns:
            raise Gone(f"{conn.topic}: the connection is closed")
        try:
            async with asyncio.timeout(room.cls.call_timeout):
                # "forwarded": claim it here, whatever the placement (its sockets are here).
                return await self._on_live(room.cls, room.key, here, forwarded=True)
        except Elsewhere as owner:
            self.moved(conn.topic, owner.node_id)
            raise Gone(f"{conn.topic} is held by node {owner.node_id} now") from None

    async def wake(self, conn: Connection) -> Activation:
        """Thaw ``conn``'s object on this node; return it with ``conn`` among its clients.

        ``Gone`` as ``run`` says.
        """
        live = conn.activation
        if live is not None and not live.closed:
            return live  # another frame or call woke it already

        async def awake(act: Activation, held: bool) -> Activation:
            if held:
                act.gate.leave(False)  # it thawed for us: its clients are back
            elif conn.activation is not act:  # a thaw under way: wait for it to end
                await act.enter(True)
                act.gate.leave(True)
            return act

        return await self.run(conn, awake)

    async def wake_to_leave(self, conn: Connection) -> Activation | None:
        """``conn`` is leaving: thaw its object to run ``on_disconnect``, if it can be here.

        ``None`` (``conn`` forgotten, its ``on_disconnect`` not run) when another node holds
        the object, this node may not serve, or the thaw failed.
        """
        try:
            if not self._serving():
                raise Gone("this node may not serve now")
            return await self.wake(conn)
        except (Gone, ObjectsError, TimeoutError) as exc:
            self.forget(conn)
            log.info("%s: on_disconnect of a sleeping client not run: %s", conn.topic, exc)
            return None

    def moved(self, topic: str, node_id: str) -> None:
        """Another node holds the object of ``topic``: close its sleeping clients 1012."""
        room = self._rooms.pop(topic, None)
        if room is None:
            return
        self.count -= len(room.conns)
        log.info("%s thawed on node %s: %d sleeping clients here reconnect", topic, node_id,
                 len(room.conns))
        for conn in room.conns.values():
            conn.close(CloseCode.RELOADED, f"{topic} moved to another node; reconnect")

    def close_all(self, reason: str) -> None:
        """This node is leaving: close every sleeping client 1012 (to reconnect elsewhere)."""
        rooms, self._rooms = self._rooms, {}
        self.count = 0
        for room in rooms.values():
            for conn in room.conns.values():
                conn.close(CloseCode.RELOADED, reason)
