"""An activation's attached clients: attach, detach, and the connections by tag."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exceptions import ConnectionRejected
from . import presence
from .connection import CloseCode
from .sleepers import sleeps_with_clients

if TYPE_CHECKING:
    from .activation import Activation
    from .connection import Connection


class Clients:
    """The part of an activation holding its attached connections (made on the first attach).

    Attached clients keep the object awake only if its class says so
    (``hibernate_with_clients = False``); else it hibernates with them (``sleepers.py``).
    When the last one leaves, the idle time counts from then. Their tracked metas are the
    object's presence (``presence.py``).
    """

    __slots__ = ("_act", "connections", "presence_used")

    def __init__(self, act: Activation) -> None:
        self._act = act
        self.connections: dict[str, Connection] = {}
        self.presence_used = False  # someone tracked: each newcomer gets the presence state

    def tagged(self, tag: str | None) -> list[Connection]:
        """Attached connections on this node, optionally only those tagged ``tag``."""
        conns = list(self.connections.values())
        return conns if tag is None else [c for c in conns if tag in c.tags]

    async def attach(self, conn: Connection, held: bool = False) -> None:
        """Attach a client: run ``on_connect`` as a turn; it may raise ``ConnectionRejected``."""
        act = self._act
        limit = act.cls.max_connections
        if len(self.connections) >= limit:
            if held:
                act.gate.leave(False)
            raise ConnectionRejected(
                f"{act.topic} already has {limit} clients attached (max_connections)",
                code=CloseCode.TOO_MANY_CLIENTS,
            )
        self.connections[conn.id] = conn
        conn.activation = act
        presence.attached(self, conn)
        try:
            await act.run(lambda obj: obj.on_connect(conn), {}, held=held, name="on_connect")
        except BaseException:
            self.drop(conn)
            act.host.sleepers.forget(conn)  # (kept if the object hibernated while it waited)
            raise

    def rejoin(self, conn: Connection) -> None:
        """Put back a client that waited while the object hibernated (no ``on_connect``)."""
        self.connections[conn.id] = conn
        conn.activation = self._act
        if conn.presence_synced:  # presence was in use before the hibernation: it still is
            self.presence_used = True

    def keep_awake(self) -> bool:
        """Whether these clients keep the object in memory (see ``sleeps_with_clients``)."""
        return not sleeps_with_clients(self._act.cls)

    async def detach(self, conn: Connection) -> None:
        """Detach a client and run ``on_disconnect``."""
        self.drop(conn)
        await self._act.run(lambda obj: obj.on_disconnect(conn), {}, name="on_disconnect")

    def drop(self, conn: Connection) -> None:
        """Forget ``conn``; the last one leaving restarts the idle time (and frees this part)."""
        if self.connections.pop(conn.id, None) is not None:
            conn.activation = None
            presence.left(self, conn)
            act = self._act
            if not self.connections and act.clients is self:
                act.clients = None
                if not act.closed:
                    act.idle.touch()
