"""Pruning kept states: each class's ``history`` window, in batches, on every node.

The states themselves are written by the commits (``Commit.history``); this drops the ones
older than the window, ``BATCH`` rows per statement so that no statement holds locks for long,
keeping each object's newest state from before the window (the state it held when the window
opens, so a restore to any time in the window finds it). Every node prunes: the work is
idempotent, and a node that stops leaves nothing undone for long.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .._exceptions import ObjectsError
from .._tasks import cancel_and_wait
from ..storage import Storage

if TYPE_CHECKING:
    from .object import DurableObject

log = logging.getLogger("fastapi_objects")

BATCH = 1_000
"""Kept states deleted per statement."""


def prune_interval(history: timedelta) -> float:
    """Seconds between two prunings of a window: a tenth of it, from 1 s to 10 minutes."""
    return min(600.0, max(1.0, history.total_seconds() / 10))


class HistoryPruner:
    """The node's task that prunes the kept states of the classes that set ``history``."""

    def __init__(self, storage: Storage, types: dict[str, type[DurableObject[Any]]]) -> None:
        self._storage = storage
        self._types = types
        self._task: asyncio.Task[None] | None = None
        self.pruned = 0

    def _windows(self) -> list[tuple[str, timedelta]]:
        return [
            (name, cls.__objects_history__) for name, cls in list(self._types.items())
            if cls.__objects_history__ is not None
        ]

    def start(self) -> None:
        """Prune, if any registered class keeps history."""
        if self._windows():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="objects-history"
            )

    async def stop(self) -> None:
        """Stop pruning."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        interval = prune_interval(min(window for _, window in self._windows()))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.prune()
            except ObjectsError as exc:  # the database is away: the next round does it
                log.debug("history pruning failed: %s", exc.message)

    async def prune(self) -> int:
        """One round: every class's states older than its window, batch after batch."""
        done = 0
        for type_name, window in self._windows():
            # Kept states are stamped by the committing node's clock, as this one is.
            before = datetime.now(UTC) - window
            while True:
                count = await self._storage.prune_history(type_name, before, BATCH)
                done += count
                if count < BATCH:
                    break
                await asyncio.sleep(0)  # let calls run between batches
        self.pruned += done
        return done
