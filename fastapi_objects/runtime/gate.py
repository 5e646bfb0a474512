"""``Gate``: the order in which calls enter an object."""

from __future__ import annotations

import asyncio
from collections import deque


class Gate:
    """A FIFO readers-writer gate: one mutating turn at a time, read-only calls together.

    Waiters are admitted strictly in arrival order (a read-only call never overtakes a turn
    that queued before it), and whoever releases hands the gate over directly, so a newcomer
    cannot barge in between.
    """

    __slots__ = ("_readers", "_waiters", "_writer")

    def __init__(self, held: bool = False) -> None:
        self._writer = held
        self._readers = 0
        # Made on the first wait: an empty deque is ~600 bytes, and most gates never queue.
        self._waiters: deque[tuple[asyncio.Future[None], bool]] | None = None

    @property
    def queued(self) -> int:
        """How many calls wait to enter."""
        return len(self._waiters) if self._waiters else 0

    @property
    def busy(self) -> bool:
        """Whether anyone is inside or waiting."""
        return bool(self._writer or self._readers or self._waiters)

    def try_enter(self, readonly: bool) -> bool:
        """Enter at once if nobody is waiting and the gate admits this kind of call."""
        if self._waiters or self._writer:
            return False
        if readonly:
            self._readers += 1
            return True
        if self._readers:
            return False
        self._writer = True
        return True

    async def wait(self, loop: asyncio.AbstractEventLoop, readonly: bool) -> None:
        """Queue until admitted (raises what ``fail_waiters`` set, or ``CancelledError``)."""
        fut: asyncio.Future[None] = loop.create_future()
        entry = (fut, readonly)
        if self._waiters is None:
            self._waiters = deque()
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.leave(readonly)  # admitted just as we were cancelled: pass it on
            elif self._waiters is not None and entry in self._waiters:
                self._waiters.remove(entry)
            raise

    def leave(self, readonly: bool) -> None:
        """Leave the gate and admit the next waiters in order."""
        if readonly:
            self._readers -= 1
        else:
            self._writer = False
        waiters = self._waiters
        while waiters:  # (None or empty: nobody waits)
            fut, ro = waiters[0]
            if fut.done():
                waiters.popleft()
            elif ro and not self._writer:
                waiters.popleft()
                self._readers += 1
                fut.set_result(None)
            elif not ro and not self._writer and not self._readers:
                waiters.popleft()
                self._writer = True
                fut.set_result(None)
                break
            else:
                break

    def fail_waiters(self, error: type[BaseException]) -> None:
        """Wake every waiter with ``error`` (its object is gone)."""
        waiters, self._waiters = self._waiters, None
        for fut, _ in waiters or ():
            if not fut.done():
                fut.set_exception(error())
