"""Batched activation: one claim-and-read for every object waiting to thaw.

A takeover, a restart or a deploy thaws thousands of objects at once. Thawed one by one, each
costs a claim and a read, and a read of its alarms; batched like commits, a whole wave of
them costs one round trip (``Storage.thaw_many``: the claim and the granted objects'
checkpoints), and a second for the alarms of the classes that have them. While one batch is
in flight the next one fills up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from .._exceptions import CorruptState, StorageUnavailable
from .._tasks import cancel_and_wait
from ..storage import Alarm, Checkpoint, Claim, Storage
from ..storage import Thawed as StoredThaw

log = logging.getLogger("fastapi_objects")

Ident = tuple[str, str]
Thawed = tuple[Claim, Checkpoint | None, list[Alarm] | None]
"""An object thawed: its claim, its checkpoint (``None``: never committed), its alarms."""
ThawMany = Callable[[Sequence[Ident]], Awaitable[dict[Ident, StoredThaw]]]
"""``ClusterNode.thaw_many``: the storage's, taking a proven-dead owner's objects at once."""
MAX_BATCH = 1000


class Thawer:
    """Claims and loads the objects this node is about to activate, in batches."""

    def __init__(self, storage: Storage, thaw_many: ThawMany) -> None:
        self.storage = storage
        self.thaw_many = thaw_many  # the node's: it takes a proven-dead owner's objects
        self._waiting: dict[Ident, list[asyncio.Future[Thawed]]] = {}
        self._with_alarms: set[Ident] = set()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    def start(self) -> None:
        """Start the batching task."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="objects-thaw")

    async def close(self) -> None:
        """Stop; waiters still queued get ``CancelledError``."""
        await cancel_and_wait(self._task)
        self._task = None
        for waiters in self._waiting.values():
            for waiter in waiters:
                waiter.cancel()
        self._waiting.clear()

    async def thaw(self, type: str, key: str, alarms: bool = False) -> Thawed:
        """Claim ``(type, key)`` and, when granted, read its checkpoint (and its alarms)."""
        if self._task is None:  # closed (or never started): nobody would answer the waiter
            raise StorageUnavailable("this node's thawer is stopped: nothing was activated")
        waiter: asyncio.Future[Thawed] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault((type, key), []).append(waiter)
        if alarms:
            self._with_alarms.add((type, key))
        self._wakeup.set()
        return await waiter

    async def _run(self) -> None:
        while True:
            if not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
            idents = list(self._waiting)[:MAX_BATCH]
            batch = {ident: self._waiting.pop(ident) for ident in idents}
            with_alarms = [ident for ident in idents if ident in self._with_alarms]
            self._with_alarms.difference_update(with_alarms)
            try:
                thawed = await self.thaw_many(idents)
                wanted = [i for i in with_alarms if thawed[i][0].granted]
                alarms = await self.storage.load_alarms_many(wanted) if wanted else {}
            except Exception as exc:  # StorageUnavailable, or a bug: fail this batch only
                log.debug("thaw batch failed: %r", exc)
                for waiters in batch.values():
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(exc)
                continue
            self.batches += 1
            for ident, waiters in batch.items():
                claim, found = thawed[ident]
                for waiter in waiters:
                    if waiter.done():
                        continue
                    if isinstance(found, ValueError):
                        waiter.set_exception(CorruptState(
                            f"{ident[0]}:{ident[1]}: stored checkpoint is not valid JSON ({found})"
                        ))
                    else:
                        stored = alarms.get(ident, []) if ident in with_alarms else None
                        waiter.set_result((claim, found, stored))
