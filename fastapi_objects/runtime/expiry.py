"""Expiring objects (``expire_after``): deleted once left that long without calls or clients.

An expiring object's expiry is an alarm of the runtime's own, ``objects:expire``, stored
beside the object's alarms: its ``due_at`` is when the object expires if nothing touches it.
So expiries need no poller, lock or schedule of their own: the alarm poller of every node
takes the due ones from storage (each by one node, for a lease) and delivers each to the
object's owner, waking it if no node holds it (a restart, a crash, a hibernation long ago).

- **Written with commits, fenced like them.** An activation's first commit writes it when
  storage has none (``ExpiringRecord``), so an object whose node crashes still expires; when the
  object hibernates after being used, the hibernation commits it again at its last use plus
  ``expire_after``. Its payload names the rev of the commit that wrote it: an object committed
  since (its node crashed before hibernating) counts as used at its last commit, which is
  later. (After a crash, calls that changed nothing since the last commit are not counted.)
- **Decided by the owner, under its gate.** Live or just woken, the object expired when it has
  no client, no call waiting and its last turn ended ``expire_after`` ago: it is deleted
  (state, journal, alarms) exactly as ``objects.delete`` does, fenced by the owner's epoch.
  Otherwise the alarm moves to when it would expire from now on. A live object's own idle
  check deletes it too, instead of hibernating it, once it expired.
- The expiry due when an object hibernated stays its expiry: a later change of the class's
  ``expire_after`` applies from the object's next use.

Time is the host's ``clock`` (wall time, UTC), turned into the loop's monotonic time at thaw;
tests give the host another clock.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..storage import Alarm, AlarmWrite, Checkpoint
from .alarms.schedule import EXPIRE
from .turn import Turn

if TYPE_CHECKING:
    from .activation import Activation
    from .committer import PendingCommit

log = logging.getLogger("fastapi_objects")
_TO_THE_SECOND = timedelta(seconds=1)  # an expiry moved by less is not written again


class Expiry:
    """The part of an activation whose class has ``expire_after``: when it expires.

    ``alarm`` is the object's ``objects:expire`` alarm as stored (or being committed);
    ``None`` when storage holds none.
    """

    __slots__ = ("_act", "_after", "_loaded_use", "alarm")

    def __init__(self, act: Activation) -> None:
        self._act = act
        after = act.cls.expire_after
        assert after is not None
        self._after = after
        self.alarm: Alarm | None = None
        self._loaded_use = act.idle.last_used

    @property
    def seconds(self) -> float:
        """``expire_after`` in seconds."""
        return self._after.total_seconds()

    def now(self) -> datetime:
        """The host's wall clock."""
        return self._act.host.clock()

    def load(self, cp: Checkpoint | None, alarms: list[Alarm] | None) -> None:
        """At thaw: the stored expiry, and the object's idle time counted from its last use.

        A thaw is not a use: an object woken by its expiry (or an alarm) is as idle as it was.
        """
        self.alarm = next((a for a in alarms or () if a.name == EXPIRE), None)
        if cp is None:
            return  # a new object: used from now on
        since = cp.updated_at
        alarm = self.alarm
        if alarm is not None:
            written = alarm.payload.get("rev") if isinstance(alarm.payload, dict) else None
            since = alarm.due_at - self._after
            if written != cp.rev:  # committed after its expiry was written: used since
                since = max(since, cp.updated_at)
        act = self._act
        idle = act.idle
        idle.last_used = min(
            idle.last_used, act.loop.time() - (self.now() - since).total_seconds()
        )
        self._loaded_use = idle.last_used

    def write(self, rev: int, idle_since: datetime) -> AlarmWrite:
        """The alarm write that makes the object expire ``expire_after`` after ``idle_since``.

        ``rev``: the revision of the commit carrying it.
        """
        due = idle_since + self._after
        act = self._act
        self.alarm = Alarm(
            type=act.cls.type_name, key=act.key, name=EXPIRE, due_at=due, scheduled_at=due,
            payload={"rev": rev},
        )
        return AlarmWrite(EXPIRE, self.alarm)

    def expired(self) -> bool:
        """Whether the object is idle since ``expire_after`` (the caller holds the gate)."""
        act = self._act
        return (
            act.clients is None and not act.gate.queued
            and act.loop.time() - act.idle.last_used >= self.seconds
        )

    async def delete(self) -> None:
        """Delete the expired object, as ``objects.delete`` does (the caller holds the gate)."""
        act = self._act
        await act.destroy()
        act.host.counters.expired += 1
        log.info("%s expired (expire_after=%s): deleted", act.topic, self._after)

    def _idle_since(self) -> datetime:
        """When the object was last used, by the wall clock (now, while a client is attached)."""
        act = self._act
        if act.clients is not None or act.gate.queued:
            return self.now()
        return self.now() - timedelta(seconds=act.loop.time() - act.idle.last_used)

    def hibernating(self) -> PendingCommit | None:
        """Before the object leaves memory: commit its expiry from its last use, if it moved.

        Nothing when it was never stored (nothing to expire), not used since its thaw, or
        used within a second of what is stored (an object created and left: its first
        commit wrote its expiry).
        """
        act = self._act
        record = act.record
        alarm = self.alarm
        if record.rev == 0 or (alarm is not None and act.idle.last_used == self._loaded_use):
            return None
        idle_since = self._idle_since()
        if alarm is not None and idle_since + self._after - alarm.due_at < _TO_THE_SECOND:
            return None
        turn = Turn()
        turn.alarm(self.write(record.rev + 1, idle_since))
        return record.commit(turn, [], None, False)

    async def fire(self, name: str, scheduled_at: datetime, held: bool) -> bool:
        """The expiry came due (the alarm poller delivers it): delete the object if it expired.

        ``name`` is ``objects:expire``; ``held``: the delivery thawed the object and holds its
        gate. Returns whether the object was deleted. If not, the stored expiry moves to when
        it would expire from now on.
        """
        act = self._act
        if not held:
            await act.enter(False)
        try:
            alarm = self.alarm
            if act.closed or alarm is None or alarm.scheduled_at != scheduled_at:
                return False  # another occurrence (it was written again meanwhile)
            if self.expired():
                await self.delete()
                return True
            # Moving its due time is what a failed delivery's retry writes, on the same
            # occurrence: no commit, and the alarm is free for the next delivery at once.
            moved = replace(alarm, due_at=self._idle_since() + self._after)
            if await act.host.storage.record_alarm_failure(moved):
                self.alarm = moved
            return False
        finally:
            act.gate.leave(False)
