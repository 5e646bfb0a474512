"""How calls reach an object's one live instance: here, forwarded to its owner, or from a peer.

``Calls`` is a part of the ``Host`` (which keeps the registry, thawing and the node's
lifecycle), given what it uses. One routing loop, ``route``, serves calls, alarm deliveries
and deletes; ``serve_here`` and ``serve_forwarded`` are the owner's side of what other nodes
forward.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .._exceptions import CallTimeout
from ..cluster import Moved
from .keys import validate_key
from .methods import method_spec
from .placement import choose
from .routing import Elsewhere, Router, backoff
from .timers import Deadline, Wheel
from .turn import Stale

if TYPE_CHECKING:
    from .activation import Activation
    from .methods import MethodSpec
    from .object import DurableObject
    from .observe import Observer

R = TypeVar("R")

DELETE_CALL = "objects:delete"
"""The internal method name a forwarded delete travels under (peers only)."""


class OnLive(Protocol):
    """``Host.on_live``: run ``here(activation, held)`` on this node's live instance."""

    def __call__(
        self, cls: type[DurableObject[Any]], key: str,
        here: Callable[[Activation, bool], Awaitable[R]], forwarded: bool = False,
    ) -> Awaitable[R]:
        """Run ``here`` there (``Elsewhere`` when another node owns the object)."""
Internal = Callable[[str, str, dict[str, Any]], Awaitable[Any]]
"""A method only peers call (an alarm delivery): ``(type_name, key, args) -> JSON``."""


class Calls:
    """The call paths of a node: local, forwarded to the owner, served for a peer."""

    def __init__(
        self,
        activations: dict[tuple[str, str], Activation],
        on_live: OnLive,
        router: Router,
        timers: Wheel,
        object_type: Callable[[str], type[DurableObject[Any]]],
    ) -> None:
        self.activations = activations
        self.on_live = on_live
        self.routing = router
        self.timers = timers
        self.object_type = object_type
        self.internal: dict[str, Internal] = {}  # methods peers call by reserved names
        self.observer: Observer | None = None  # metrics, traces: told of every call

    async def invoke(
        self, cls: type[DurableObject[Any]], key: str, spec: MethodSpec, args: dict[str, Any],
        *, forwarded: bool = False,
    ) -> Any:
        """Run a validated call on the object's one live instance, here or on its owner.

        While the owner is unknown or unreachable (it is dying, or moving), the call waits and
        looks again, bounded by ``call_timeout``; a forward is repeated only when it cannot
        have run. ``forwarded``: another node sent it here; ``Moved`` if this node is not the
        owner (it is never forwarded again). The observer, if any, hears of its start and end
        here, in the caller's task (no task or frame of its own: a read-only call costs ~5 us).
        """
        deadline = Deadline(self.timers, cls.call_timeout)
        observer = self.observer
        token = None if observer is None else observer.call(cls, key, spec, forwarded)
        error: BaseException | None = None
        try:
            act = self.activations.get((cls.type_name, key))
            if act is not None and self.routing.node.serving():  # the common case: live here
                try:
                    return await act.call(spec, args)
                except Stale:
                    pass
            return await self._locate_and_call(cls, key, spec, args, forwarded)
        except asyncio.CancelledError as exc:
            error = exc
            if not deadline.expired():
                raise
            error = CallTimeout(
                f"{cls.type_name}:{key}.{spec.name}() overran call_timeout={cls.call_timeout}s: "
                "a turn still running was cancelled and rolled back (one already committing "
                "may have been applied)"
            )
            raise error from None
        except BaseException as exc:
            error = exc
            raise
        finally:
            deadline.cancel()
            if observer is not None:
                observer.call_end(token, cls, spec, error)

    def _locate_and_call(
        self, cls: type[DurableObject[Any]], key: str, spec: MethodSpec, args: dict[str, Any],
        forwarded: bool,
    ) -> Awaitable[Any]:
        """``invoke`` when the object is not live here: find it (thaw it, or forward).

        Its own function, and a partial rather than a closure: a closure's cells (and its
        tuple of them) would be made on every call, and survive while it waits.
        """
        here = partial(_call_on, spec, args)
        if forwarded:
            return self.serve_here(cls, key, here)
        return self.route(cls, key, here, spec.name, args, spec.decode_result)

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
        node = self.routing.node
        target = choose(cls, key, node.node_id, node.live)
        return None if target is None else Elsewhere(target.node_id, target.address)

    async def serve_forwarded(
        self, type_name: str, key: str, method: str, args: dict[str, Any],
        trace: dict[str, str] | None = None,
    ) -> Any:
        """Run a call another node forwarded here; its result as JSON.

        ``Moved`` (the caller looks again; nothing ran) when this node does not own the object.
        ``trace``: the caller's trace context, continued here when traces are on.
        """
        if not self.routing.node.serving():  # whoever owns it now, it is not this node
            raise Moved(f"node {self.routing.node.node_id} has no valid lease")
        propagation = self.routing.propagation
        token = None if trace is None or propagation is None else propagation.attach(trace)
        try:
            internal = self.internal.get(method)
            if internal is not None:
                return await internal(type_name, key, args)
            cls = self.object_type(type_name)
            if method == DELETE_CALL:
                await self.serve_here(cls, key, lambda act, held: act.destroy_held(held))
                return True
            spec = method_spec(cls, method)
            result = await self.invoke(cls, key, spec, spec.validate(args), forwarded=True)
            return spec.encode_result(result)
        finally:
            if token is not None:
                assert propagation is not None
                propagation.detach(token)


def _call_on(spec: MethodSpec, args: dict[str, Any], act: Activation, held: bool) -> Awaitable[Any]:
    """Run a validated call on ``act`` (``held``: the caller thawed it and holds its gate)."""
    return act.call(spec, args, held)
