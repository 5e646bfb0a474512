"""An activation's attached clients: attach, detach, broadcasts, connections by tag."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._exceptions import ConnectionRejected
from .alarm_clock import AlarmClock

if TYPE_CHECKING:
    from .connection import Connection


class Clients(AlarmClock):
    """The clients part of ``Activation`` (a mixin: the state lives in Activation's slots)."""

    __slots__ = ("connections",)
    connections: dict[str, Connection] | None

    def broadcast(self, event: str, payload: Any, exclude: Connection | None) -> None:
        """Publish after the running turn commits."""
        topic = self.topic
        exclude_id = exclude.id if exclude is not None else None
        self.turn().after.append(
            lambda: self.host.publish_nowait(topic, event, payload, exclude=exclude_id)
        )

    def connections_tagged(self, tag: str | None) -> list[Connection]:
        """Attached connections on this node, optionally filtered by tag."""
        conns = list(self.connections.values()) if self.connections else []
        return conns if tag is None else [c for c in conns if tag in c.tags]

    async def attach(self, conn: Connection, held: bool = False) -> None:
        """Attach a client: run ``on_connect`` as a turn; it may raise ``ConnectionRejected``."""
        limit = self.cls.max_connections
        if self.connections is not None and len(self.connections) >= limit:
            if held:
                self.gate.leave(False)
            raise ConnectionRejected(
                f"{self.topic} already has {limit} clients attached (max_connections)", code=1013
            )
        if self.connections is None:
            self.connections = {}
        self.connections[conn.id] = conn
        conn.activation = self  # type: ignore[assignment]  # self is an Activation
        try:
            await self.run(lambda obj: obj.on_connect(conn), {}, held=held)
        except BaseException:
            self._drop(conn)
            raise

    async def detach(self, conn: Connection) -> None:
        """Detach a client and run ``on_disconnect``; the idle timer restarts when none are left."""
        self._drop(conn)
        await self.run(lambda obj: obj.on_disconnect(conn), {})

    def _drop(self, conn: Connection) -> None:
        if self.connections is not None and self.connections.pop(conn.id, None) is not None:
            conn.activation = None
            if not self.connections:
                self.connections = None
                self.last_used = self.loop.time()
                if self._timer is not None and not self.closed:
                    self._timer.cancel()
                    self._arm(self.cls.idle_timeout)
