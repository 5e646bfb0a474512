"""Coarse timers on one loop timer: call deadlines (and other checks that may fire late).

A durable call used to arm a ``call_later`` for its deadline and cancel it when it returned:
on uvloop a timer handle of its own per call, the largest single cost of routing a call.
A deadline only has to fire *after* its time, not at it, so entries share buckets of ``tick``
seconds and the wheel keeps one loop timer, for its earliest bucket.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from typing import Protocol


class Entry(Protocol):
    """What the wheel fires: anything with ``fire()`` (and the slot the wheel gave it)."""

    slot: int

    def fire(self) -> None:
        """The entry's time has passed."""


class Wheel:
    """Timers rounded up to a ``tick``: add and remove are a set operation each.

    An entry fires within ``tick`` seconds after its time, in no particular order within its
    bucket. Buckets emptied by removals are dropped; their slots are skipped when reached.
    """

    def __init__(self, tick: float = 0.05) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick = tick
        self._buckets: dict[int, set[Entry]] = {}
        self._slots: list[int] = []  # a heap of the buckets' slots
        self._timer: asyncio.TimerHandle | None = None
        self._armed = 0  # the slot the timer fires for (when there is a timer)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run on ``loop`` from now on."""
        self._loop = loop

    def add(self, entry: Entry, delay: float) -> None:
        """Fire ``entry`` once ``delay`` seconds from now have passed."""
        loop = self._loop
        if loop is None:
            raise RuntimeError(
                "the objects runtime is not started: use `async with Objects(...)` or the "
                "FastAPI lifespan (`FastAPI(lifespan=objects.lifespan)`)"
            )
        slot = math.ceil((loop.time() + delay) / self._tick)
        entry.slot = slot
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = set()
            heapq.heappush(self._slots, slot)
            if self._timer is None or slot < self._armed:
                self._arm(slot)
        bucket.add(entry)

    def remove(self, entry: Entry) -> None:
        """Forget ``entry`` (it need not fire any more)."""
        bucket = self._buckets.get(entry.slot)
        if bucket is not None:
            bucket.discard(entry)
            if not bucket:
                del self._buckets[entry.slot]

    def close(self) -> None:
        """Drop every entry and the loop timer; stop."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._buckets.clear()
        self._slots.clear()
        self._loop = None

    def _arm(self, slot: int) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._armed = slot
        self._timer = self._loop.call_at(slot * self._tick, self._fire)

    def _fire(self) -> None:
        self._timer = None
        assert self._loop is not None
        # (libuv's clock has millisecond steps: a timer may run a hair before its time)
        now = math.floor((self._loop.time() + 0.001) / self._tick)
        slots = self._slots
        while slots and slots[0] <= now:
            bucket = self._buckets.pop(heapq.heappop(slots), None)
            for entry in bucket or ():
                entry.fire()
        while slots and slots[0] not in self._buckets:
            heapq.heappop(slots)  # emptied by removals
        if slots:
            self._arm(slots[0])


class Deadline:
    """Cancel the calling task once ``delay`` seconds have passed: ``asyncio.timeout``'s core.

    ``asyncio.timeout`` cost about 40% of a durable call's CPU in this runtime (a context
    manager, a rescheduling state machine) and a timer of its own per call; this is a wheel
    entry and a flag.
    """

    __slots__ = ("_fired", "_task", "_wheel", "slot")

    def __init__(self, wheel: Wheel, delay: float) -> None:
        self._task = asyncio.current_task()
        self._fired = False
        self._wheel = wheel
        self.slot = 0
        wheel.add(self, delay)

    def fire(self) -> None:
        """The time is up: cancel the task."""
        if self._task is not None:
            self._fired = True
            self._task.cancel()

    def expired(self) -> bool:
        """Whether this deadline caused the cancellation (and no one else asked for one)."""
        return self._fired and self._task is not None and self._task.uncancel() == 0

    def cancel(self) -> None:
        """The call is over: disarm."""
        self._wheel.remove(self)
