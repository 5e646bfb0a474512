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
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .._exceptions import ObjectsError
from ..storage import Alarm
from .alarms import uses_alarms

if TYPE_CHECKING:
    from .host import Host

log = logging.getLogger("fastapi_objects")

ALARM_CALL = "objects:alarm"
"""The internal method name a forwarded alarm delivery travels under (peers only)."""
POLL = 0.5
WAKE = 0.25
AHEAD = POLL + WAKE
RECHECK = 0.05
BATCH = 100


class AlarmDelivery:
    """The node's alarm poller and the delivery of one alarm to its object's owner."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0

    def start(self) -> None:
        """Poll, if any registered class uses alarms."""
        if any(uses_alarms(cls) for cls in self.host.types.values()):
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="objects-alarms")

    async def stop(self) -> None:
        """Stop polling."""
        from .._tasks import cancel_and_wait

        await cancel_and_wait(self._task)
        self._task = None

    async def _poll(self) -> None:
        host = self.host
        lease = max(cls.call_timeout for cls in host.types.values()) + 5.0
        due: list[Alarm] = []
        while True:
            if len(due) < BATCH:  # a full batch: more are due, take them at once
                await asyncio.sleep(POLL)
            if not host.routing.node.serving():
                due = []
                continue
            try:
                due = await host.storage.claim_due_alarms(BATCH, lease, AHEAD)
            except ObjectsError as exc:
                log.debug("alarm poll failed: %s", exc.message)
                due = []
                continue
            per_object: dict[tuple[str, str], list[Alarm]] = {}
            for alarm in due:
                per_object.setdefault((alarm.type, alarm.key), []).append(alarm)
            for alarms in per_object.values():
                host.spawn(self._on_time(sorted(alarms, key=lambda a: a.due_at)))

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

    def _live_here(self, alarm: Alarm) -> bool:
        """Whether this node holds the alarm's object live: its own timer fires the alarm."""
        act = self.host.activations.get((alarm.type, alarm.key))
        return act is not None and not act.closed

    async def deliver(self, alarm: Alarm) -> bool:
        """Run ``alarm`` on its object's one live instance; whether it ran and committed."""
        host = self.host
        cls = host.types.get(alarm.type)
        if cls is None:  # another app's type in the same database: its nodes deliver it
            return False
        args = {"name": alarm.name, "scheduled_at": alarm.scheduled_at.isoformat()}
        try:
            async with asyncio.timeout(cls.call_timeout):
                ran = await host.route(
                    cls, alarm.key,
                    lambda act, held: act.fire_alarm(alarm.name, alarm.scheduled_at, held),
                    ALARM_CALL, args, bool,
                )
        except (ObjectsError, TimeoutError) as exc:  # the lease runs out; another poll retries
            log.info("alarm %s:%s/%s not delivered: %s", alarm.type, alarm.key, alarm.name, exc)
            return False
        self.delivered += ran
        return ran

    async def serve(self, type_name: str, key: str, args: dict[str, Any]) -> bool:
        """A delivery another node forwarded here (``Moved`` when this node is not the owner)."""
        name, scheduled_at = str(args["name"]), datetime.fromisoformat(str(args["scheduled_at"]))
        return await self.host.serve_here(
            self.host.object_type(type_name), key,
            lambda act, held: act.fire_alarm(name, scheduled_at, held),
        )


async def _sleep_until(moment: datetime, offset: float) -> None:
    delay = (moment - datetime.now(UTC)).total_seconds() + offset
    if delay > 0:
        await asyncio.sleep(delay)
