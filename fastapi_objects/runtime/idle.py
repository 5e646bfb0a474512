"""An activation's idle timer, and hibernation: leaving memory when nothing needs it.

An object of a class with ``expire_after`` that is idle past it is deleted instead
(``runtime/expiry.py``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .._exceptions import ObjectsError
from .._log import about
from .turn import Stale

if TYPE_CHECKING:
    from .activation import Activation

log = logging.getLogger("fastapi_objects")


class Idle:
    """The part of an activation that decides when it hibernates, and hibernates it.

    It is an entry of the node's timer wheel (no timer of its own: a million idle objects
    would be a million loop timers), checked lazily: a call only stamps ``last_used``; when
    the entry fires and nothing kept the object awake for ``idle_timeout``, it hibernates,
    else it goes back into the wheel for the time left.
    """

    __slots__ = ("_act", "last_used", "leaving", "scheduled", "slot", "timeout")

    def __init__(self, act: Activation) -> None:
        self._act = act
        self.last_used = act.loop.time()
        self.leaving = False  # chosen to hibernate to make room (max_active)
        self.scheduled = False
        self.slot = 0
        cls = act.cls
        # Idle this long, it leaves memory: hibernated, or deleted if it expires sooner.
        self.timeout = cls.idle_timeout if cls.expire_after is None else min(
            cls.idle_timeout, cls.expire_after.total_seconds()
        )

    def start(self, delay: float | None = None) -> None:
        """Check again after ``delay`` (default: ``timeout``)."""
        if not self.scheduled:
            self.scheduled = True
            self._act.host.timers.add(self, self.timeout if delay is None else delay)

    def stop(self) -> None:
        """Leave the wheel (the activation closed)."""
        if self.scheduled:
            self.scheduled = False
            self._act.host.timers.remove(self)

    def touch(self) -> None:
        """A client left: the idle time counts from now."""
        self.last_used = self._act.loop.time()
        self.start()

    def fire(self) -> None:
        """The wheel's check: hibernate if idle long enough, else look again later."""
        self.scheduled = False
        act = self._act
        if act.closed:
            return
        timeout = self.timeout
        idle_for = act.loop.time() - self.last_used
        if act.busy() or idle_for < timeout:
            self.start(timeout if act.busy() else timeout - idle_for)
            return
        act.host.spawn(self.hibernate())

    async def hibernate(self, force: bool = False, evict: bool = False) -> None:
        """Run ``on_hibernate``, make everything durable and leave memory.

        Unless ``force`` (shutdown), it gives up if a call or a client arrived meanwhile;
        ``evict`` (room for another object, ``max_active``) does not wait for ``idle_timeout``.
        An object past its ``expire_after`` is deleted instead (without ``on_hibernate``).
        """
        act = self._act
        try:
            await act.enter(False)
        except Stale:
            return
        try:
            idle_for = act.loop.time() - self.last_used
            timeout = self.timeout
            clients = act.clients
            if not force and (
                act.in_flight or act.gate.queued or (clients is not None and clients.keep_awake())
                or (idle_for < timeout and not evict)  # a call slipped in before us
            ):
                act.host.leave(act, False)
                self.start(max(timeout - idle_for, 0.01))
                return
            expiry = act.expiry
            if expiry is not None and expiry.expired():
                try:
                    await expiry.delete()
                except ObjectsError as exc:
                    log.warning("%s expired but was not deleted: %s", act.topic, exc.message)
                    if not act.closed:  # (storage unavailable) try again later
                        act.host.leave(act, False)
                        self.start()
                return
            try:
                pending = await act.run_hook(act.instance.on_hibernate, snapshot=True)
            except Exception:
                log.exception("%s: on_hibernate failed; its changes were rolled back", act.topic,
                              extra=about(act.cls.type_name, act.key, act.host.node_id))
                pending = None
            if expiry is not None:
                pending = expiry.hibernating() or pending
            pending = pending or act.record.last
            if pending is not None:
                try:
                    await pending.wait()
                except ObjectsError:
                    return  # the failed commit already dropped this instance
            # Once it has left memory, listings say so (tests and operators rely on it), and
            # any node may activate it next: the same write releases ownership.
            await act.host.committer.set_status(
                act.cls.type_name, act.key, "hibernated", release_epoch=act.record.epoch
            )
            act.host.counters.hibernations += 1
            if act.host.observer is not None:
                act.host.observer.hibernated(act.cls.type_name)
            act.close(sleep=not force)  # (a node leaving closes its clients: they reconnect)
        finally:
            act.gate.leave(False)
