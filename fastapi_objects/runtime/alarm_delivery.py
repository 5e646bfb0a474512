"""Delivering due alarms of objects this node does not hold: poll, claim, route to the owner.

Every ``POLL`` seconds the node takes due alarms no node is delivering (the database marks
them taken for a lease, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and delivers each like a
call: on the object's live instance here, or forwarded to its owner, activating it according
to its placement when no node holds it. The owner's turn decides whether the occurrence still
needs to run, so a second delivery changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
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
                due = await host.storage.claim_due_alarms(BATCH, lease)
            except ObjectsError as exc:
                log.debug("alarm poll failed: %s", exc.message)
                due = []
                continue
            for alarm in due:
                host.spawn(self.deliver(alarm))

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
