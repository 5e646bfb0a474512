"""Where a call runs: on this node's instance, or forwarded to the object's owner.

The seam between the runtime and the cluster (as a transport is in httpx): the runtime asks
``Router.known_owner`` which node owns an object it does not hold (a claim tells it when it
does not know, ``Router.claimed``), and sends the call there with ``Router.forward``; the
call paths (``calls.py``) are the same for local and forwarded calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .._exceptions import OutcomeUnknown
from ..cluster import ClusterNode, ClusterSecret, Forwarder, Listener, Moved, Signer
from ..cluster.listener import ASGIApp
from ..settings import ObjectsSettings
from ..storage import Claim, Storage

log = logging.getLogger("fastapi_objects")

Ident = tuple[str, str]
MAX_CACHED_OWNERS = 100_000


class Elsewhere(Exception):
    """Another live node owns the object: ``node_id`` at ``address`` (``None``: unknown)."""

    def __init__(self, node_id: str, address: str | None) -> None:
        super().__init__(f"owned by node {node_id} at {address}")
        self.node_id = node_id
        self.address = address


class Router:
    """This node in the cluster: its lease, its listener, the owners it knows, forwarding."""

    def __init__(
        self,
        storage: Storage,
        settings: ObjectsSettings,
        node_id: str,
        on_lease_lost: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.node = ClusterNode(
            storage, node_id, settings.node_ttl, region=settings.region,
            machine=settings.machine, on_lease_lost=on_lease_lost,
        )
        self.networked = not storage.url.startswith("memory")
        self.signer = Signer(None, node_id)
        configured = settings.cluster_secret
        self.secret = ClusterSecret(
            storage, self.signer, configured.get_secret_value() if configured else None,
            settings.internal_host,
        )
        self.websocket_app: ASGIApp | None = None  # the web integration's relay endpoint
        self.listener: Listener | None = None
        self.forwarder: Forwarder | None = None
        self._owners: dict[Ident, Elsewhere] = {}

    async def start(
        self, handle_call: Callable[[str, str, str, dict[str, Any]], Awaitable[Any]]
    ) -> None:
        """Serve the internal listener (durable storage only), then register and heartbeat."""
        address = None
        if self.networked:
            await self.secret.start()
            self.forwarder = Forwarder(self.signer, timeout=60.0)
            self.listener = Listener(
                self.settings.internal_host, self.settings.internal_port, self.signer,
                handle_call, self.websocket_app,
            )
            address = await self.listener.start()
        await self.node.start(address)

    def leave(self) -> None:
        """Start a graceful stop: forwarded calls are answered "moved" from now on."""
        if self.listener is not None:
            self.listener.leaving = True

    async def stop(self) -> None:
        """Deregister (releasing every object), then stop serving and forwarding."""
        await self.node.stop()
        await self.stop_serving()

    async def stop_serving(self) -> None:
        """Stop the listener and the forwarding client."""
        await self.secret.stop()
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None
        if self.forwarder is not None:
            await self.forwarder.close()
            self.forwarder = None

    # -- owners ------------------------------------------------------------------------------

    def known_owner(self, ident: Ident) -> Elsewhere | None:
        """The remote owner last seen for ``ident``, if any."""
        return self._owners.get(ident)

    def claimed(self, ident: Ident, claim: Claim) -> None:
        """Learn from a claim: granted, forget any other owner; refused, remember who owns it."""
        if claim.granted:
            self._owners.pop(ident, None)
            if claim.taken_from is not None:
                self.node.takeovers += 1
        elif claim.owner is not None:
            if len(self._owners) >= MAX_CACHED_OWNERS:
                self._owners.clear()
            self._owners[ident] = Elsewhere(claim.owner, claim.address)

    def forget_owner(self, ident: Ident) -> None:
        """The cached owner was wrong (it moved or died): look it up again next time."""
        self._owners.pop(ident, None)

    async def forward(
        self, owner: Elsewhere, type: str, key: str, method: str, args: dict[str, Any]
    ) -> Any:
        """Run the call on ``owner``; ``Moved`` (nothing ran) when it is not the owner."""
        if owner.address is None or self.forwarder is None:
            self.forget_owner((type, key))
            raise Moved(f"node {owner.node_id} takes no forwarded calls")
        if self.node.deaths.has_exited(owner.node_id):  # its channel may not know it yet
            self.forget_owner((type, key))
            await self.node.deaths.bury([owner.node_id])
            raise Moved(f"node {owner.node_id} has exited")
        call = asyncio.ensure_future(
            self.forwarder.call(owner.address, owner.node_id, type, key, method, args)
        )
        death = self.node.death_of(owner.node_id)
        try:
            # A paused owner keeps the connection open and answers nothing: once the database
            # says it is dead, stop waiting (it may have run the call before it froze).
            await asyncio.wait({call, death}, return_when=asyncio.FIRST_COMPLETED)
            if not call.done():
                call.cancel()
                self.forget_owner((type, key))
                raise OutcomeUnknown.hiding(
                    f"{type}:{key}.{method}() was sent to the object's owner, which stopped "
                    "heartbeating before it answered: it may or may not have run",
                    f"owner {owner.node_id} at {owner.address}",
                )
            return call.result()
        except Moved as moved:
            self.forget_owner((type, key))
            if moved.owner is not None and moved.owner != self.node.node_id:
                self._owners[(type, key)] = Elsewhere(moved.owner, moved.address)
            elif moved.owner is None:  # it refused the connection: has it died?
                await self.node.deaths.bury([owner.node_id])
            raise
        finally:
            self.node.forget_death(owner.node_id, death)
            if not call.done():
                call.cancel()


async def backoff(attempt: int) -> None:
    """Wait before looking an owner up again: 20 ms doubling to 500 ms."""
    await asyncio.sleep(min(0.02 * 2**attempt, 0.5))
