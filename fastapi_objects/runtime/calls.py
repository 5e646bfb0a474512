"""How calls reach an object's one live instance: here, forwarded to its owner, or from a peer.

A mixin of ``Host`` (the engine keeps the registry, thawing and the node's lifecycle). One
routing loop, ``route``, serves calls, alarm deliveries and deletes; ``serve_here`` and
``serve_forwarded`` are the owner's side of what other nodes forward.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .._exceptions import CallTimeout, UnknownMethod
from ..cluster import Moved
from .alarm_delivery import ALARM_CALL
from .keys import validate_key
from .placement import choose
from .routing import Elsewhere, Router, backoff
from .timers import Deadline, Wheel
from .turn import Stale

if TYPE_CHECKING:
    from .activation import Activation
    from .alarm_delivery import AlarmDelivery
    from .methods import MethodSpec
    from .object import DurableObject

R = TypeVar("R")

DELETE_CALL = "objects:delete"
"""The internal method name a forwarded delete travels under (peers only)."""


class Calls:
    """The call paths of a ``Host``."""

    if TYPE_CHECKING:  # provided by Host
        node_id: str
        routing: Router
        deadlines: Wheel
        alarms: AlarmDelivery
        activations: dict[tuple[str, str], Activation]

        @property
        def loop(self) -> asyncio.AbstractEventLoop: ...  # noqa: D102

        def object_type(self, type_name: str) -> type[DurableObject[Any]]: ...  # noqa: D102

        async def on_live(  # noqa: D102
            self, cls: type[DurableObject[Any]], key: str,
            fn: Callable[[Activation, bool], Awaitable[R]], forwarded: bool = False,
        ) -> R: ...

    async def invoke(
        self, cls: type[DurableObject[Any]], key: str, spec: MethodSpec, args: dict[str, Any],
        *, forwarded: bool = False,
    ) -> Any:
        """Run a validated call on the object's one live instance, here or on its owner.

        While the owner is unknown or unreachable (it is dying, or moving), the call waits and
        looks again, bounded by ``call_timeout``; a forward is repeated only when it cannot
        have run. ``forwarded``: another node sent it here; ``Moved`` if this node is not the
        owner (it is never forwarded again).
        """
        deadline = Deadline(self.deadlines, cls.call_timeout)
        try:
            act = self.activations.get((cls.type_name, key))
            if act is not None and self.routing.node.serving():  # the common case: live here
                try:
                    return await act.call(spec, args)
                except Stale:
                    pass
            def here(act: Activation, held: bool) -> Awaitable[Any]:
                return act.call(spec, args, held)

            if forwarded:
                return await self.serve_here(cls, key, here)
            return await self.route(cls, key, here, spec.name, args, spec.decode_result)
        except asyncio.CancelledError:
            if not deadline.expired():
                raise
            raise CallTimeout(
                f"{cls.type_name}:{key}.{spec.name}() overran call_timeout={cls.call_timeout}s: "
                "a turn still running was cancelled and rolled back (one already committing "
                "may have been applied)"
            ) from None
        finally:
            deadline.cancel()

    async def route(
        self,
        cls: type[DurableObject[Any]],
        key: str,
        here: Callable[[Activation, bool], Awaitable[R]],
        method: str,
        args: dict[str, Any],
        decode: Callable[[Any], R],
    ) -> R:
        """Run ``here(activation, held)`` on this node's instance, or ``method`` on the owner.

        The one routing loop of calls, alarm deliveries and deletes: while the owner moves or
        is unreachable it looks again (the caller bounds it); a forward is repeated only when
        it cannot have run. ``decode`` turns a forwarded call's JSON result into ``R``.
        """
        attempt = 0
        while True:
            try:
                return await self.on_live(cls, key, here)
            except Elsewhere as owner:
                try:
                    result = await self.routing.forward(owner, cls.type_name, key, method, args)
                except Moved as moved:
                    if moved.owner is None or attempt:  # no better idea: wait, look again
                        await backoff(attempt)
                    attempt += 1
                    continue
                return decode(result)

    async def serve_here(
        self,
        cls: type[DurableObject[Any]],
        key: str,
        here: Callable[[Activation, bool], Awaitable[R]],
    ) -> R:
        """Run a forwarded request on this node's instance; ``Moved`` if another owns it."""
        try:
            return await self.on_live(cls, validate_key(key), here, forwarded=True)
        except Elsewhere as exc:
            raise Moved(
                f"{cls.type_name}:{key} is owned by {exc.node_id}", exc.node_id, exc.address
            ) from None

    async def delete(self, cls: type[DurableObject[Any]], key: str) -> None:
        """Delete ``(cls, key)`` on its owner (activating it if no node holds it)."""
        async with asyncio.timeout(cls.call_timeout):
            await self.route(
                cls, key, lambda act, held: act.destroy_held(held), DELETE_CALL, {},
                lambda _: None,
            )

    def locate(self, cls: type[DurableObject[Any]], key: str) -> Elsewhere | None:
        """Where a call for ``(cls, key)`` would go, from what this node knows (no I/O).

        ``None``: here (it is active here, or would be activated here); else the owner this
        node last saw, or the node placement picks. A guess: the call itself checks again.
        """
        ident = (cls.type_name, key)
        if ident in self.activations:
            return None
        owner = self.routing.known_owner(ident)
        if owner is not None:
            return owner
        target = choose(cls, key, self.node_id, self.routing.node.live)
        return None if target is None else Elsewhere(target.node_id, target.address)

    async def serve_forwarded(
        self, type_name: str, key: str, method: str, args: dict[str, Any]
    ) -> Any:
        """Run a call another node forwarded here; its result as JSON.

        ``Moved`` (the caller looks again; nothing ran) when this node does not own the object.
        """
        if not self.routing.node.serving():  # whoever owns it now, it is not this node
            raise Moved(f"node {self.node_id} has no valid lease")
        if method == ALARM_CALL:
            return await self.alarms.serve(type_name, key, args)
        if method == DELETE_CALL:
            cls = self.object_type(type_name)
            await self.serve_here(cls, key, lambda act, held: act.destroy_held(held))
            return True
        cls = self.object_type(type_name)
        spec = cls.__objects_methods__.get(method)
        if spec is None:
            raise UnknownMethod(f"{cls.__name__} has no callable method {method!r}")
        result = await self.invoke(cls, key, spec, spec.validate(args), forwarded=True)
        return spec.encode_result(result)
