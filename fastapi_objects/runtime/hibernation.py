"""An activation going to sleep: the idle timer and hibernation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._exceptions import ObjectsError
from .turn import Stale

if TYPE_CHECKING:
    from .committer import PendingCommit
    from .connection import Connection
    from .gate import Gate
    from .object import DurableObject
    from .turn import ActivationHost, Turn

log = logging.getLogger("fastapi_objects")


class Hibernation:
    """The sleeping part of ``Activation`` (a mixin: the state lives in Activation's slots).

    One ``call_later`` timer per live object, re-armed lazily: a call only stamps
    ``last_used``; when the timer fires and nothing keeps the object awake, it hibernates.
    """

    __slots__ = ("_timer", "last_used")
    _timer: asyncio.TimerHandle | None
    last_used: float

    if TYPE_CHECKING:  # provided by Activation
        cls: type[DurableObject[Any]]
        key: str
        topic: str
        host: ActivationHost
        loop: asyncio.AbstractEventLoop
        gate: Gate
        closed: bool
        connections: dict[str, Connection] | None
        in_flight: int
        last: PendingCommit | None
        epoch: int | None
        instance: DurableObject[Any]
        _turn: Turn | None

        def turn(self) -> Turn:  # noqa: D102
            ...
        def close(self) -> None:  # noqa: D102
            ...
        async def _enter(self, readonly: bool) -> None:
            ...
        async def _run_hook(
            self, hook: Any, snapshot: bool = False
        ) -> PendingCommit | None:
            ...
        async def run(  # noqa: D102
            self, fn: Callable[..., Awaitable[Any]], kwargs: dict[str, Any],
            readonly: bool = False, held: bool = False, spec: Any = None,
        ) -> Any:
            ...

    def busy(self) -> bool:
        """Whether a call, a waiter or an attached client keeps this object awake."""
        return bool(
            self.in_flight or self.connections or self.gate.busy
        )

    def _arm(self, delay: float) -> None:
        self._timer = self.loop.call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        if self.closed:
            return
        timeout = self.cls.idle_timeout
        idle_for = self.loop.time() - self.last_used
        if self.busy() or idle_for < timeout:
            self._arm(timeout if self.busy() else timeout - idle_for)
            return
        self.host.spawn(self.hibernate())

    async def hibernate(self, force: bool = False) -> None:
        """Run ``on_hibernate``, make everything durable and leave memory.

        Unless ``force`` (shutdown), it gives up if a call or a client arrived meanwhile.
        """
        try:
            await self._enter(False)
        except Stale:
            return
        try:
            idle_for = self.loop.time() - self.last_used
            if not force and (
                self.in_flight or self.connections or self.gate.queued
                or idle_for < self.cls.idle_timeout  # a call slipped in before us
            ):
                self._arm(max(self.cls.idle_timeout - idle_for, 0.01))
                return
            try:
                pending = await self._run_hook(self.instance.on_hibernate, snapshot=True)
            except Exception:
                log.exception("%s: on_hibernate failed; its changes were rolled back", self.topic)
                pending = None
            pending = pending or self.last
            if pending is not None:
                try:
                    await pending.wait()
                except ObjectsError:
                    return  # the failed commit already dropped this instance
            # Once it has left memory, listings say so (tests and operators rely on it), and
            # any node may activate it next: the same write releases ownership.
            await self.host.committer.set_status(
                self.cls.type_name, self.key, "hibernated", release_epoch=self.epoch
            )
            self.host.counters.hibernations += 1
            self.close()
        finally:
            self.gate.leave(False)
