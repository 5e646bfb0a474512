"""An activation's alarms: what it holds, the timer for the earliest, running one as a turn."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from datetime import UTC, datetime

from ..storage import Alarm, AlarmWrite
from .alarms import completion, failure, uses_alarms
from .hibernation import Hibernation

log = logging.getLogger("fastapi_objects")


class AlarmClock(Hibernation):
    """The alarms part of ``Activation`` (a mixin: its state lives in these slots).

    ``alarm_state`` holds the object's alarms as committed or being committed (``None`` for
    classes without ``on_alarm``, which never load or keep any).
    """

    __slots__ = ("_alarm_timer", "alarm_state")
    alarm_state: dict[str, Alarm] | None
    _alarm_timer: asyncio.TimerHandle | None

    async def load_alarms(self, stored: list[Alarm] | None = None) -> None:
        """Take the object's alarms at thaw and arm the timer (classes with ``on_alarm``).

        ``stored``: the alarms the thaw batch read; ``None``: read them here.
        """
        self._alarm_timer = None
        self.alarm_state = None
        if uses_alarms(self.cls):
            if stored is None:
                stored = await self.host.storage.load_alarms(self.cls.type_name, self.key)
            self.alarm_state = {alarm.name: alarm for alarm in stored}
            self.arm_alarm()

    def write_alarm(self, write: AlarmWrite) -> None:
        """Record an alarm change with the running turn."""
        self.turn().alarms.append(write)

    def alarm_list(self) -> list[Alarm]:
        """The alarms, with the running turn's changes applied."""
        alarms = dict(self.alarm_state or {})
        if self._turn is not None:
            for write in self._turn.alarms:
                if write.alarm is None:
                    alarms.pop(write.name, None)
                else:
                    alarms[write.name] = write.alarm
        return [alarms[name] for name in sorted(alarms)]

    def alarms_committing(self, writes: list[AlarmWrite]) -> None:
        """A turn's alarm writes went to the committer: hold them and re-arm the timer."""
        if self.alarm_state is None:
            self.alarm_state = {}
        for write in writes:
            if write.alarm is None:
                self.alarm_state.pop(write.name, None)
            else:
                self.alarm_state[write.name] = write.alarm
        self.arm_alarm()

    def arm_alarm(self) -> None:
        """Set the timer for the earliest pending alarm."""
        timer = self._alarm_timer
        if timer is not None:
            timer.cancel()
            self._alarm_timer = None
        if self.closed or not self.alarm_state:
            return
        pending = [a for a in self.alarm_state.values() if a.status == "pending"]
        if not pending:
            return
        first = min(pending, key=lambda a: a.due_at)
        delay = (first.due_at - datetime.now(UTC)).total_seconds()
        fire = self.fire_alarm
        # A context of its own: armed inside a turn, the timer must not inherit that turn's
        # call chain (its run would take itself for a re-entrant call and skip the turn).
        self._alarm_timer = self.loop.call_later(
            max(delay, 0.0), lambda: self.host.spawn(fire(first.name, first.scheduled_at)),
            context=contextvars.Context(),
        )

    async def fire_alarm(self, name: str, scheduled_at: datetime, held: bool = False) -> bool:
        """Run ``on_alarm`` for this occurrence as a turn, unless it already ran (or moved).

        Returns whether it ran and committed. A raising handler's turn is rolled back and the
        alarm is retried later (the failure is written at once, outside the fenced turn).
        """
        alarm = (self.alarm_state or {}).get(name)
        now = datetime.now(UTC)
        if (
            self.closed or alarm is None or alarm.scheduled_at != scheduled_at
            or alarm.status != "pending" or alarm.due_at > now
        ):
            if held:
                self.gate.leave(False)
            return False

        async def turn(obj: object) -> None:
            await self.instance.on_alarm(alarm)
            self.write_alarm(completion(alarm))

        try:
            await self.run(turn, {}, held=held)
        except Exception as exc:
            if self.closed:
                raise
            failed = failure(alarm, f"{type(exc).__name__}: {exc}", self.cls.alarm_retries,
                             self.cls.alarm_backoff)
            log.warning("%s: alarm %r failed (%s); %s", self.topic, name, failed.last_error,
                        "gave up" if failed.status == "failed" else f"retry {failed.retry_count}")
            if self.alarm_state is not None and self.alarm_state.get(name) == alarm:
                self.alarm_state[name] = failed
            await self.host.storage.record_alarm_failure(failed)
            self.arm_alarm()
            return False
        return True
