"""An activation's alarms: what it holds, the timer for the earliest, running one as a turn."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..._exceptions import ObjectsError
from ..._log import about
from ...storage import Alarm, AlarmWrite
from .schedule import RESERVED, completion, failure

if TYPE_CHECKING:
    from ..activation import Activation

log = logging.getLogger("fastapi_objects")


class AlarmClock:
    """The part of an activation that holds its alarms (classes with ``on_alarm`` only).

    ``state`` holds the object's alarms as committed or being committed; one loop timer
    fires the earliest pending one, as a turn. The runtime's own alarms (``objects:``, the
    expiry) are not among them: the activation's other parts keep those.
    """

    __slots__ = ("_act", "_timer", "state")

    def __init__(self, act: Activation) -> None:
        self._act = act
        self._timer: asyncio.TimerHandle | None = None
        self.state: dict[str, Alarm] = {}

    async def load(self, stored: list[Alarm] | None = None) -> None:
        """Take the object's alarms at thaw and arm the timer.

        ``stored``: the alarms the thaw batch read; ``None``: read them here.
        """
        act = self._act
        if stored is None:
            stored = await act.host.storage.load_alarms(act.cls.type_name, act.key)
        self.state = {a.name: a for a in stored if not a.name.startswith(RESERVED)}
        self.arm()

    def write(self, write: AlarmWrite) -> None:
        """Record an alarm change with the running turn."""
        self._act.turn().alarm(write)

    def listed(self) -> list[Alarm]:
        """The alarms, with the running turn's changes applied."""
        alarms = dict(self.state)
        turn = self._act.running_turn()
        if turn is not None:
            for write in turn.alarms:
                if write.alarm is None:
                    alarms.pop(write.name, None)
                else:
                    alarms[write.name] = write.alarm
        return [alarms[name] for name in sorted(alarms)]

    def committing(self, writes: Sequence[AlarmWrite]) -> None:
        """A turn's alarm writes went to the committer: hold them and re-arm the timer."""
        for write in writes:
            if write.name.startswith(RESERVED):
                continue
            if write.alarm is None:
                self.state.pop(write.name, None)
            else:
                self.state[write.name] = write.alarm
        self.arm()

    def arm(self) -> None:
        """Set the timer for the earliest pending alarm."""
        self.stop()
        act = self._act
        if act.closed or not self.state:
            return
        pending = [a for a in self.state.values() if a.status == "pending"]
        if not pending:
            return
        first = min(pending, key=lambda a: a.due_at)
        delay = (first.due_at - datetime.now(UTC)).total_seconds()
        fire = self.fire
        # A context of its own: armed inside a turn, the timer must not inherit that turn's
        # call chain (its run would take itself for a re-entrant call and skip the turn).
        self._timer = act.loop.call_later(
            max(delay, 0.0), lambda: act.host.spawn(fire(first.name, first.scheduled_at)),
            context=contextvars.Context(),
        )

    def stop(self) -> None:
        """Disarm the timer (the activation closed)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def fire(self, name: str, scheduled_at: datetime, held: bool = False) -> bool:
        """Run ``on_alarm`` for this occurrence as a turn, unless it already ran (or moved).

        Returns whether it ran and committed. A raising handler's turn is rolled back and the
        alarm is retried later (the failure is written at once, outside the fenced turn).
        """
        act = self._act
        alarm = self.state.get(name)
        now = datetime.now(UTC)
        if (
            act.closed or alarm is None or alarm.scheduled_at != scheduled_at
            or alarm.status != "pending" or alarm.due_at > now
        ):
            if held:
                act.gate.leave(False)
            return False

        async def turn(obj: object) -> None:
            await act.instance.on_alarm(alarm)
            self.write(completion(alarm))

        if act.host.observer is not None:
            act.host.observer.alarm(act.cls.type_name, (now - alarm.due_at).total_seconds())
        try:
            await act.run(turn, {}, held=held, name="on_alarm")
        except Exception as exc:
            if act.closed:
                raise
            cls = act.cls
            failed = failure(alarm, f"{type(exc).__name__}: {exc}", cls.alarm_retries,
                             cls.alarm_backoff)
            log.warning("%s: alarm %r failed (%s); %s", act.topic, name, failed.last_error,
                        "gave up" if failed.status == "failed" else f"retry {failed.retry_count}",
                        extra=about(cls.type_name, act.key, act.host.node_id))
            if self.state.get(name) == alarm:
                self.state[name] = failed
            last = act.record.last
            if last is not None:  # the turn that set the alarm may still be committing
                with contextlib.suppress(ObjectsError):
                    await last.wait()
            await act.host.storage.record_alarm_failure(failed)
            self.arm()
            return False
        return True
