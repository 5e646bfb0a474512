"""Queue workers: loops that claim jobs, keep their leases alive, and complete or fail them.

``@objects.worker("emails", concurrency=4, lease=30.0)`` registers an async function; every
node runs ``concurrency`` loops for it from start to stop. A loop claims a job, heartbeats
every ``lease / 3`` while the function runs, then completes it (or fails it with the error,
for a retry with backoff). Delivery is at least once: a node that dies mid-job leaves the job
claimed until its lease ends, then another worker claims it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._exceptions import ObjectsError
from .._tasks import cancel_and_wait
from .queue import Claimed, ObjectsQueue

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("fastapi_objects")

Handler = Callable[[Claimed], Awaitable[Any]]
IDLE_POLL = 0.2


@dataclass(frozen=True)
class Worker:
    """A registered worker function and how to run it."""

    queue: str
    fn: Handler
    concurrency: int
    lease: float


class Workers:
    """The worker loops of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registered: list[Worker] = []
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, worker: Worker) -> None:
        """Register a worker (before the runtime starts)."""
        if worker.concurrency < 1 or worker.lease <= 0:
            raise ValueError("a worker needs concurrency >= 1 and a lease > 0")
        self.registered.append(worker)

    def start(self) -> None:
        """Start every registered worker's loops."""
        loop = asyncio.get_running_loop()
        for worker in self.registered:
            for i in range(worker.concurrency):
                name = f"{self.runtime.node_id}/{worker.queue}/{i}/{uuid.uuid4().hex[:4]}"
                self._tasks.append(loop.create_task(self._run(worker, name), name=name))

    async def stop(self) -> None:
        """Stop the loops (a job in hand is left to its lease: at least once)."""
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks.clear()

    async def _run(self, worker: Worker, name: str) -> None:
        queue = self.runtime.get(ObjectsQueue, worker.queue)
        while True:
            try:
                job = await queue.claim(name, worker.lease)
            except ObjectsError as exc:
                log.info("worker %s: claim failed: %s", name, exc.message)
                await asyncio.sleep(1.0)
                continue
            if job is None:
                await asyncio.sleep(IDLE_POLL)
                continue
            beat = asyncio.get_running_loop().create_task(self._heartbeat(queue, job, worker))
            try:
                await worker.fn(job)
            except Exception as exc:
                await cancel_and_wait(beat)
                log.warning("worker %s: job %s failed: %r", name, job.id, exc)
                await self._settle(queue.fail(job.id, job.token, f"{type(exc).__name__}: {exc}"))
            else:
                await cancel_and_wait(beat)
                await self._settle(queue.complete(job.id, job.token))

    async def _heartbeat(self, queue: Any, job: Claimed, worker: Worker) -> None:
        while True:
            await asyncio.sleep(worker.lease / 3)
            try:
                if not await queue.heartbeat(job.id, job.token, worker.lease):
                    return  # the lease was lost: the job went to another worker
            except ObjectsError:
                pass

    async def _settle(self, call: Awaitable[Any]) -> None:
        try:
            await call
        except ObjectsError as exc:  # the lease will run out and the job be claimed again
            log.info("worker could not settle a job: %s", exc.message)
