"""``Gateway``: the web integration's one way into a node.

The runtime knows no HTTP; the web layer (``fastapi_objects.fastapi``) knows no routing
internals. What it needs of the node is here, and only here: attached clients (``attach``,
``message``, ``detach``; ``asleep`` and ``wake`` for those of hibernated objects),
broadcasts as they are delivered (``listen``), where an object lives
(``locate``, ``holder``, ``machine_of`` for Fly.io's replay), what a relay to another node
needs (signed headers, and forgetting an owner that moved), and the node's internal websocket
endpoint (``accept_relays``). ``Runtime.gateway`` is it; application code has no use for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..cluster.listener import ASGIApp
from ..cluster.signing import HEADER_CARRIED
from ..pubsub import Listener, Message, PubSub
from . import sync
from .connection import Connection, Transport
from .routing import Elsewhere, backoff
from .sleepers import Gone

if TYPE_CHECKING:
    from .host import Host
    from .object import DurableObject

__all__ = ["Elsewhere", "Gateway", "backoff"]


class Gateway:
    """What the web integration may ask of a node (``Runtime.gateway``)."""

    def __init__(self, host: Host, pubsub: PubSub) -> None:
        self._host = host
        self._routing = host.routing
        self._pubsub = pubsub

    async def attach(
        self,
        cls: type[DurableObject[Any]],
        key: str,
        transport: Transport,
        *,
        query: dict[str, str] | None = None,
        auth: dict[str, Any] | None = None,
        relayed: bool = False,
    ) -> Connection:
        """Attach a client to ``(cls, key)``, thawing it; runs ``on_connect`` (may reject).

        ``query`` (the client's own, untrusted) and ``auth`` (what the app vouches for) stay
        apart on ``conn``. Raises ``Elsewhere`` when another node owns the object (relay the
        client there); ``relayed``: the client comes from such a relay.
        """
        return await self._host.attach(cls, key, transport, query=query, auth=auth,
                                       relayed=relayed)

    async def message(self, conn: Connection, frame: dict[str, Any]) -> None:
        """Run the object's ``on_message(conn, frame)`` as a turn for an attached client."""
        await self._host.message(conn, frame)

    async def state_frames(self, conn: Connection) -> list[str]:
        """The frames that give a just-attached client its view of the state (``[]``: none).

        Encoded JSON text, to send right after ``objects:attached``; it may leave now (the
        state it shows is committed). Later patches come through the client's transport.
        """
        return await sync.join(conn)

    async def request_state(self, conn: Connection) -> None:
        """Send an attached client its whole view again (``objects:state_request``)."""
        await sync.request(conn)

    async def detach(self, conn: Connection) -> None:
        """Detach a client; runs ``on_disconnect``. Idempotent."""
        await self._host.detach(conn)

    def asleep(self, conn: Connection) -> bool:
        """Whether ``conn``'s object hibernated with it attached: ``wake`` it before a frame."""
        return self._host.sleepers.asleep(conn)

    async def wake(self, conn: Connection) -> bool:
        """Thaw ``conn``'s object here, with ``conn`` among its clients again.

        ``False`` when another node holds the object now (``conn`` is being closed 1012, to
        reconnect there) or ``conn`` was closed.
        """
        try:
            await self._host.sleepers.wake(conn)
        except Gone:
            return False
        return True

    def listen(self, topic: str, callback: Callable[[Message], None]) -> Listener:
        """Call ``callback`` with each message on ``topic`` as it is delivered (no task)."""
        return self._pubsub.listen(topic, callback)

    def locate(self, cls: type[DurableObject[Any]], key: str) -> Elsewhere | None:
        """Where a call for ``(cls, key)`` would go, from what this node knows (no I/O)."""
        return self._host.calls.locate(cls, key)

    async def holder(self, cls: type[DurableObject[Any]], key: str) -> Elsewhere | None:
        """The other live node holding ``(cls, key)`` now, by the database; ``None``: none.

        For a view of an object's broadcasts where they stay on its owner's node (a pub/sub
        of one process): ``None`` when no node holds it, this one does, or its owner is dead.
        """
        ident = (cls.type_name, key)
        owner = (await self._host.storage.owners([ident])).get(ident)
        node = self._routing.node.live.get(owner) if owner is not None else None
        if node is None or node.address is None or owner == self._host.node_id:
            return None
        return Elsewhere(node.node_id, node.address)

    def machine_of(self, node_id: str) -> str | None:
        """The machine of a live node (``None``: unknown, or not live)."""
        node = self._routing.node.live.get(node_id)
        return None if node is None else node.machine

    def relay_headers(
        self, owner: Elsewhere, target: str, carried: str = ""
    ) -> dict[str, str] | None:
        """Signed headers for a websocket relay to ``owner`` at ``target``; ``None``: no way.

        ``carried`` (ASCII) goes in a signed header of its own, not in the URL that servers
        log. With traces on they carry the current trace context too (W3C ``traceparent``...):
        the client's trace goes on on the owner.
        """
        forwarder = self._routing.forwarder
        if owner.address is None or forwarder is None:
            return None
        headers = forwarder.signer.headers("GET", target, carried.encode(), owner.node_id)
        if carried:
            headers[HEADER_CARRIED] = carried
        propagation = self._routing.propagation
        if propagation is not None:
            headers.update(propagation.inject() or {})
        return headers

    def forget_owner(self, cls: type[DurableObject[Any]], key: str) -> None:
        """The owner this node remembered was wrong (it moved or died): look again next time."""
        self._routing.forget_owner((cls.type_name, key))

    def accept_relays(self, app: ASGIApp) -> None:
        """Serve clients other nodes relay here with ``app`` (before the runtime starts)."""
        self._routing.websocket_app = app
