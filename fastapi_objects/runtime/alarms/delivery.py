"""Delivering due alarms of objects this node does not hold: poll, claim, route to the owner.

Every ``POLL`` seconds the node takes the alarms due within the next ``AHEAD`` seconds that no
node is delivering (the database marks them taken for a lease, ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL) and delivers each like a call: on the object's live instance here, or forwarded to
its owner, activating it according to its placement when no node holds it. The owner's turn
decides whether the occurrence still needs to run, so a second delivery changes nothing.

Alarms are taken ahead of time so that they fire on time: ``WAKE`` seconds before the first
of an object's alarms is due the object is woken (thawed, which arms the owner's timer for
its alarms), and just after each alarm's due time it is delivered once more unless this node
holds the object live (its timer fires it): the object may have gone back to sleep meanwhile,
and a delivery of an occurrence that already ran changes nothing.

An object's expiry (``objects:expire``, ``runtime/expiry.py``) is taken and delivered the same
way, but only at its due time, live or not: its owner then deletes the object, or moves the
expiry to the object's last use plus ``expire_after``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..._exceptions import ObjectsError, UnknownObjectType
from ..._tasks import cancel_and_wait
from ...cluster import ClusterNode
from ...storage import Alarm, Storage
from .schedule import EXPIRE, keeps_alarms

if TYPE_CHECKING:
    from ..activation import Activation
    from ..object import DurableObject

log = logging.getLogger("fastapi_objects")

ALARM_CALL = "objects:alarm"
"""The internal method name a forwarded alarm delivery travels under (peers only)."""
POLL = 0.5
WAKE = 0.25
AHEAD = POLL + WAKE
RECHECK = 0.05
BATCH = 100


Route = Callable[..., Awaitable[Any]]
"""``Calls.route`` / ``Calls.serve_here``: run a function on the object's live instance."""


class AlarmDelivery:
    """The node's alarm poller and the delivery of one alarm to its object's owner.

    Given what it uses: the registered types, the storage it polls, the node (is its lease
    valid?), the registry of live instances, the two routing entries and a way to spawn.
    """

    def __init__(
        self,
        types: dict[str, type[DurableObject[Any]]],
        storage: Storage,
        node: ClusterNode,
        activations: dict[tuple[str, str], Activation],
        route: Route,
        serve_here: Route,
        spawn: Callable[[Coroutine[Any, Any, Any]], object],
    ) -> None:
        self._types = types
        self._storage = storage
        self._node = node
        self._activations = activations
        self._route = route
        self._serve_here = serve_here
        self._spawn = spawn
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0

    def start(self) -> None:
        """Poll, if any registered class has alarms (``on_alarm``, ``expire_after``)."""
        if any(keeps_alarms(cls) for cls in self._types.values()):
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="objects-alarms")

    async def stop(self) -> None:
        """Stop polling."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _poll(self) -> None:
        lease = max(cls.call_timeout for cls in self._types.values()) + 5.0
        due: list[Alarm] = []
        while True:
            if len(due) < BATCH:  # a full batch: more are due, take them at once
                await asyncio.sleep(POLL)
            if not self._node.serving():
                due = []
                continue
            try:
                due = await self._storage.claim_due_alarms(BATCH, lease, AHEAD)
            except ObjectsError as exc:
                log.debug("alarm poll failed: %s", exc.message)
                due = []
                continue
            per_object: dict[tuple[str, str], list[Alarm]] = {}
            for alarm in due:
                if alarm.name == EXPIRE:
                    self._spawn(self._expire(alarm))
                else:
                    per_object.setdefault((alarm.type, alarm.key), []).append(alarm)
            for alarms in per_object.values():
                self._spawn(self._on_time(sorted(alarms, key=lambda a: a.due_at)))

    async def _on_time(self, alarms: list[Alarm]) -> None:
        """Wake the object just before its first alarm; make sure of each at its due time."""
        first, *rest = alarms
        await _sleep_until(first.due_at, -WAKE)
        if self._live_here(first) or not await self.deliver(first):
            rest.insert(0, first)  # early (or failed): the object is awake now
        for alarm in rest:
            await _sleep_until(alarm.due_at, RECHECK)
            if not self._live_here(alarm):  # it may have gone back to sleep
                await self.deliver(alarm)

    async def _expire(self, alarm: Alarm) -> None:
        """At its due time, have the object's owner delete it if it is still idle.

        An expiry of a class that no longer has ``expire_after`` is marked failed instead, so
        that no node takes it again (nor wakes the object for it).
        """
        cls = self._types.get(alarm.type)
        if cls is not None and cls.expire_after is None:
            try:
                await self._storage.record_alarm_failure(replace(
                    alarm, status="failed", last_error=f"{cls.__name__} has no expire_after",
                ))
            except ObjectsError as exc:
                log.info("expiry %s:%s not dropped: %s", alarm.type, alarm.key, exc)
            return
        await _sleep_until(alarm.due_at, RECHECK)
        await self.deliver(alarm)

    def _live_here(self, alarm: Alarm) -> bool:
        """Whether this node holds the alarm's object live: its own timer fires the alarm."""
        act = self._activations.get((alarm.type, alarm.key))
        return act is not None and not act.closed

    async def deliver(self, alarm: Alarm) -> bool:
        """Run ``alarm`` on its object's one live instance; whether it ran and committed."""
        cls = self._types.get(alarm.type)
        if cls is None:  # another app's type in the same database: its nodes deliver it
            return False
        args = {"name": alarm.name, "scheduled_at": alarm.scheduled_at.isoformat()}
        try:
            async with asyncio.timeout(cls.call_timeout):
                ran = await self._route(
                    cls, alarm.key, _fire(alarm.name, alarm.scheduled_at), ALARM_CALL, args, bool
                )
        except (ObjectsError, TimeoutError) as exc:  # the lease runs out; another poll retries
            log.info("alarm %s:%s/%s not delivered: %s", alarm.type, alarm.key, alarm.name, exc)
            return False
        self.delivered += ran
        return bool(ran)

    async def serve(self, type_name: str, key: str, args: dict[str, Any]) -> bool:
        """A delivery another node forwarded here (``Moved`` when this node is not the owner)."""
        cls = self._types.get(type_name)
        if cls is None:
            raise UnknownObjectType(f"unknown object type {type_name!r}")
        name, scheduled_at = str(args["name"]), datetime.fromisoformat(str(args["scheduled_at"]))
        return bool(await self._serve_here(cls, key, _fire(name, scheduled_at)))


def _fire(name: str, scheduled_at: datetime) -> Callable[[Activation, bool], Awaitable[bool]]:
    """Run the occurrence on an activation (the gate ``held`` by a thaw, or not)."""

    async def fire(act: Activation, held: bool) -> bool:
        part = act.expiry if name == EXPIRE else act.alarms
        if part is None:  # the class has no on_alarm (or expire_after) any more
            if held:
                act.gate.leave(False)
            return False
        return await part.fire(name, scheduled_at, held)

    return fire


async def _sleep_until(moment: datetime, offset: float) -> None:
    delay = (moment - datetime.now(UTC)).total_seconds() + offset
    if delay > 0:
        await asyncio.sleep(delay)
