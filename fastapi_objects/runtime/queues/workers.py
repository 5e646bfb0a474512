"""Queue workers: on every node, a pool per registered function that claims, runs and settles jobs.

``@objects.worker("emails", concurrency=4, lease=30.0)`` registers an async function; every
node runs up to ``concurrency`` of its jobs at once, from start to stop. A pool talks to its
queue in batches, each one turn of the queue object, so a busy queue costs a few turns per
batch of jobs instead of two per job:

- the claimer takes as many jobs as the pool has free slots (``claim_many``), waits for a slot
  when all are busy, and polls every ``IDLE_POLL`` seconds while the queue has nothing due;
- a job that returns is completed together with the others that returned meanwhile
  (``complete_many``); its slot is free at once, before the completion is durable;
- one heartbeat every ``lease / 3`` extends the leases of every running job (``heartbeat_many``);
- a job that raises is failed on its own (``fail``, with the error), for a retry with backoff.

Delivery is at least once: a node that dies mid-job (or before its completion was written)
leaves the job claimed until its lease ends, then another worker claims it; a completion that
comes too late is refused by the claim's token, so each job completes once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..._exceptions import ObjectsError
from ..._tasks import cancel_and_wait
from .queue import MAX_BATCH, Claimed, ObjectsQueue

if TYPE_CHECKING:
    from ..handle import Handle
    from ..runtime import Runtime

log = logging.getLogger("fastapi_objects")

Handler = Callable[[Claimed], Awaitable[Any]]
IDLE_POLL = 0.2  # seconds between claims while the queue has no job due
RETRY_AFTER = 1.0  # seconds before claiming again after the queue could not be reached
STOP_FLUSH = 5.0  # seconds a stopping pool waits to complete the jobs that returned


@dataclass(frozen=True)
class Worker:
    """A registered worker function and how to run it."""

    queue: str
    fn: Handler
    concurrency: int
    lease: float


class Workers:
    """The worker pools of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registered: list[Worker] = []
        self._pools: list[_Pool] = []

    def add(self, worker: Worker) -> None:
        """Register a worker (before the runtime starts)."""
        if worker.concurrency < 1 or not 0 < worker.lease <= 366 * 86400:
            raise ValueError("a worker needs concurrency >= 1 and a lease of 0 to 366 days")
        self.registered.append(worker)

    def start(self) -> None:
        """Start a pool for every registered worker."""
        for worker in self.registered:
            name = f"{self.runtime.node_id}/{worker.queue}/{uuid.uuid4().hex[:4]}"
            pool = _Pool(self.runtime.get(ObjectsQueue, worker.queue), worker, name)
            pool.start()
            self._pools.append(pool)

    async def stop(self) -> None:
        """Stop the pools (jobs in hand are left to their leases: at least once)."""
        for pool in self._pools:
            await pool.stop()
        self._pools.clear()


class _Pool:
    """Up to ``concurrency`` running jobs of one worker on this node, and their settling."""

    def __init__(self, queue: Handle[ObjectsQueue], worker: Worker, name: str) -> None:
        self.queue = queue
        self.worker = worker
        self.name = name
        self.running: dict[str, Claimed] = {}  # claimed jobs whose function has not returned
        self.done: list[tuple[str, str]] = []  # returned jobs not yet completed: (id, token)
        self.sending: list[tuple[str, str]] = []  # the completions in flight
        self._slot = asyncio.Event()  # set while a slot is free
        self._finished = asyncio.Event()  # set while ``done`` has jobs
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._slot.set()
        for part, run in (("claim", self._claim), ("complete", self._complete),
                          ("heartbeat", self._heartbeat)):
            self._tasks.append(loop.create_task(run(), name=f"{self.name}/{part}"))

    async def stop(self) -> None:
        for task in [*self._tasks, *self._jobs]:
            await cancel_and_wait(task)
        self._tasks.clear()
        # What returned before the stop is completed rather than run again (a completion that
        # was in flight and did commit is refused the second time, harmlessly). Not for long:
        # a job not completed is only run again when its lease ends.
        if self.sending or self.done:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_FLUSH):
                    await self._settle(self.queue.complete_many([*self.sending, *self.done]))

    async def _claim(self) -> None:
        worker, loop = self.worker, asyncio.get_running_loop()
        while True:
            await self._slot.wait()
            free = min(worker.concurrency - len(self.running), MAX_BATCH)
            try:
                jobs = await self.queue.claim_many(self.name, worker.lease, free)
            except Exception as exc:
                _log_failure(self.name, "claim jobs", exc)
                await asyncio.sleep(RETRY_AFTER)
                continue
            for job in jobs:
                self.running[job.id] = job
                task = loop.create_task(self._run(job), name=f"{self.name}/{job.id}")
                self._jobs.add(task)
                task.add_done_callback(self._jobs.discard)
            if len(self.running) >= worker.concurrency:
                self._slot.clear()
            elif not jobs:
                await asyncio.sleep(IDLE_POLL)

    async def _run(self, job: Claimed) -> None:
        try:
            await self.worker.fn(job)
        except Exception as exc:
            self._release(job)
            log.warning("worker %s: job %s failed: %r", self.name, job.id, exc)
            await self._settle(self.queue.fail(job.id, job.token, f"{type(exc).__name__}: {exc}"))
        else:
            self._release(job)
            self.done.append((job.id, job.token))
            self._finished.set()

    def _release(self, job: Claimed) -> None:
        del self.running[job.id]
        self._slot.set()

    async def _complete(self) -> None:
        while True:
            await self._finished.wait()
            self.sending, self.done = self.done, []
            self._finished.clear()
            await self._settle(self.queue.complete_many(self.sending))
            self.sending = []

    async def _heartbeat(self) -> None:
        lease = self.worker.lease
        while True:
            await asyncio.sleep(lease / 3)
            if self.running:  # a lost lease: the job went to another worker, which completes it
                await self._settle(self.queue.heartbeat_many(
                    [(job.id, job.token) for job in self.running.values()], lease))

    async def _settle(self, call: Awaitable[Any]) -> None:
        try:
            await call
        except Exception as exc:  # the lease will run out and the job be claimed again
            _log_failure(self.name, "settle jobs", exc)


def _log_failure(name: str, what: str, exc: Exception) -> None:
    """An unreachable queue is logged briefly; anything else is a bug, with its traceback."""
    if isinstance(exc, ObjectsError):
        log.info("worker %s could not %s: %s", name, what, exc.message)
    else:
        log.error("worker %s could not %s", name, what, exc_info=exc)
