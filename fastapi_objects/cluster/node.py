"""This process as a node: registration, heartbeats, and the lease that lets it serve.

A node heartbeats every ``node_ttl / 3`` (one UPDATE of its own row: liveness costs O(nodes)
writes, never O(objects)). Other nodes may take its objects once its heartbeat is ``node_ttl``
old by the database's clock. So the node itself stops serving before that can happen, by its
own monotonic clock: its lease runs until ``LEASE_SHARE * node_ttl`` after the moment it
*sent* its last successful heartbeat (a moment no later than the one the database stamped).
When the lease lapses (the database is unreachable, the process was paused by a GC, SIGSTOP
or a frozen VM) every activation is dropped before any other call runs; the next successful
heartbeat restores the lease and objects are claimed again, with new epochs, on demand.

A node of the same machine that crashed need not be waited for: the node proves it dead
(``death.py``) when it starts, at each heartbeat's read of the nodes, the moment its process
exits (a pidfd), and when a claim is refused by a node that looks alive; it declares it dead in
the database, and claims its objects at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

from .._exceptions import StorageUnavailable
from .._tasks import cancel_and_wait
from ..storage import Claim, NodeInfo, Storage, Thawed
from ..storage.tables import LATEST_VERSION
from .death import Deaths

log = logging.getLogger("fastapi_objects")

LEASE_SHARE = 0.8  # of node_ttl: the margin covers clock-rate drift and scheduling delays
DEAD_NODES_KEPT = 24 * 3600.0
"""Seconds a dead node's row stays listed (``objects nodes``) before a live node deletes it:
every crashed process leaves one, and every node reads the table at every heartbeat."""
PRUNE_EVERY = 1000  # heartbeats (about an hour at the default node_ttl)

Ident = tuple[str, str]


class ClusterNode:
    """Registers the node, keeps its heartbeat and lease, and claims objects for it."""

    def __init__(
        self,
        storage: Storage,
        node_id: str,
        ttl: float,
        *,
        region: str | None = None,
        machine: str | None = None,
        on_lease_lost: Callable[[], None] = lambda: None,
    ) -> None:
        self.storage = storage
        self.node_id = node_id
        self.ttl = ttl
        self.region = region
        self.machine = machine
        self.address: str | None = None
        self.on_lease_lost = on_lease_lost
        self.lease_until = 0.0
        self.takeovers = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lost = True
        self._failure = ""  # why the last registration or heartbeat failed
        self._renewal: asyncio.Event | None = None
        self.live: dict[str, NodeInfo] = {}  # the live nodes, as of the last heartbeat
        self.deaths = Deaths(storage, node_id, machine, on_dead=self._dead)
        self._deaths: dict[str, set[asyncio.Future[None]]] = {}
        self.prune_after = DEAD_NODES_KEPT
        self._beats = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the node was started on."""
        assert self._loop is not None, "the node is not started"
        return self._loop

    async def start(self, address: str | None) -> None:
        """Register (heartbeat included) and start heartbeating.

        A database that is down or not migrated yet does not stop the start: the node serves
        nothing (calls get ``StorageUnavailable``, a health check says so) and keeps trying.
        """
        self._loop = asyncio.get_running_loop()
        self.address = address
        self.deaths.start()  # here, not in __init__: a process may fork in between
        if await self._register():
            await self._prune()
            await self._refresh()
        self._task = self.loop.create_task(self._beat(), name="objects-heartbeat")

    async def _register(self) -> bool:
        sent = self.loop.time()
        try:
            await self.storage.register_node(
                self.node_id, self.address, self.region, self.machine, self.deaths.process
            )
        except StorageUnavailable as exc:
            self._failure = f": {exc.message}"
            log.warning(
                "node %s cannot register (%s); if objects_nodes or a column of it is missing, "
                "run `objects init` and `objects migrate` (storage tables up to version %d). "
                "Retrying.", self.node_id, exc.message, LATEST_VERSION,
            )
            return False
        self._renewed(sent)
        return True

    async def stop(self) -> None:
        """Stop heartbeating, release every object and leave the registry."""
        await cancel_and_wait(self._task)
        self._task = None
        await self.deaths.close()
        if self._timer is not None:
            self._timer.cancel()
        try:
            await self.storage.deregister_node(self.node_id)
        except StorageUnavailable as exc:  # others take over once our heartbeat is old
            log.warning("could not deregister node %s: %s", self.node_id, exc.message)
        self.lease_until = 0.0

    # -- the lease ---------------------------------------------------------------------------

    def serving(self) -> bool:
        """Whether this node may serve its objects now (its lease has not lapsed)."""
        return self._loop is not None and self.loop.time() < self.lease_until

    def lease_left(self) -> float:
        """Seconds this node may still serve without another heartbeat (0 when it may not)."""
        return max(0.0, self.lease_until - self.loop.time()) if self._loop is not None else 0.0

    async def ready(self) -> None:
        """Return once the node may serve; wait up to ``node_ttl`` for a lapsed lease.

        A node that lost its lease (the database was slow, the process was paused) usually
        renews it within a heartbeat: its callers wait for that rather than fail at once. A
        node that never registered, or does not renew in time, raises ``StorageUnavailable``.
        """
        if self.serving():
            return
        if self.lease_until != 0.0:
            self._lapse()
            try:
                async with asyncio.timeout(self.ttl):
                    await self._renewed_event().wait()
            except TimeoutError:
                pass
            if self.serving():
                return
        self.check()

    def _renewed_event(self) -> asyncio.Event:
        if self._renewal is None or self._renewal.is_set():
            self._renewal = asyncio.Event()
        return self._renewal

    def check(self) -> None:
        """Raise ``StorageUnavailable`` unless the node may serve."""
        if not self.serving():
            self._lapse()
            if self.lease_until == 0.0:
                raise StorageUnavailable(
                    f"node {self.node_id} could not register in the database yet (is it up and "
                    f"migrated to storage tables version {LATEST_VERSION}?); it serves no object "
                    "until it can"
                    + self._failure
                )
            raise StorageUnavailable(
                f"node {self.node_id} could not renew its lease in the database within "
                f"{LEASE_SHARE * self.ttl:.1f}s, so it serves no object until it can (another "
                "node may have taken them over)" + self._failure
            )

    def _renewed(self, sent: float) -> None:
        self.lease_until = sent + LEASE_SHARE * self.ttl
        self._lost = False
        if self._renewal is not None:
            self._renewal.set()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(self.lease_until, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self.loop.time() >= self.lease_until:
            self._lapse()

    def _lapse(self) -> None:
        if not self._lost:
            self._lost = True
            log.warning("node %s lost its lease: dropping its activations", self.node_id)
            self.on_lease_lost()

    async def _beat(self) -> None:
        interval = self.ttl / 3
        while True:
            await asyncio.sleep(interval)
            if self._lost and self.lease_until == 0.0:  # never registered yet
                await self._register()
                continue
            sent = self.loop.time()
            try:
                async with asyncio.timeout(interval):
                    alive = await self.storage.heartbeat(self.node_id)
                    if not alive:  # our row was removed or declared dead: register again
                        log.warning("node %s was pruned or declared dead by another node: "
                                    "registering again", self.node_id)
                        self._lapse()  # whoever took our objects, serve none of them stale
                        await self.storage.register_node(
                            self.node_id, self.address, self.region, self.machine,
                            self.deaths.process,
                        )
            except (StorageUnavailable, TimeoutError) as exc:
                self._failure = f": {exc}"
                log.warning("node %s: heartbeat failed: %s", self.node_id, exc)
                continue
            if self.loop.time() < self.lease_until or self._lost:
                self._renewed(sent)
            else:  # the lease ran out while the heartbeat was in flight: drop, then renew
                self._lapse()
                self._renewed(sent)
            self._beats += 1
            if self._beats % PRUNE_EVERY == 0:
                await self._prune()
            await self._refresh()

    async def _prune(self) -> None:
        try:
            pruned = await self.storage.prune_nodes(self.prune_after)
        except StorageUnavailable as exc:
            log.debug("could not prune dead nodes: %s", exc.message)
            return
        if pruned:
            log.info("node %s removed %d node(s) dead for over %.0fs", self.node_id, pruned,
                     self.prune_after)

    async def _refresh(self) -> None:
        """Read the nodes (one query per heartbeat); bury the dead; wake who waits for a death."""
        try:
            nodes = await self.storage.nodes(self.ttl, count_owned=False)
        except StorageUnavailable:
            return
        self.deaths.saw(nodes)
        self.live = {n.node_id: n for n in nodes if n.alive}
        self._dead(set())
        await self.deaths.bury(self.live)
        self.deaths.watch(self.live.values())

    def _dead(self, node_ids: set[str]) -> None:
        """Nodes declared dead here leave ``live``; whoever waits for a death seen, wakes."""
        for node_id in node_ids:
            self.live.pop(node_id, None)
        for node_id in [n for n in self._deaths if n not in self.live]:
            for waiter in self._deaths.pop(node_id):
                if not waiter.done():
                    waiter.set_result(None)

    async def claim_many(self, idents: Sequence[Ident]) -> dict[Ident, Claim]:
        """Claim objects for this node; take at once those of an owner proven dead.

        A claim refused by an owner that looks alive (its heartbeat is young) is checked
        against the nodes list: if this process proves that owner dead, it is declared dead
        and its objects are claimed again. The first takeover from each dead node is logged.
        """
        claims = await self.storage.claim_many(idents, self.node_id, self.ttl)
        again = await self._proven_dead(claims)
        if again:
            claims.update(await self.storage.claim_many(again, self.node_id, self.ttl))
        await self._log_takeovers(claims.values())
        return claims

    async def thaw_many(self, idents: Sequence[Ident]) -> dict[Ident, Thawed]:
        """``Storage.thaw_many`` for this node, taking a proven-dead owner's objects at once.

        The same rules as ``claim_many``: what a thaw batch claims and reads, in one round
        trip, and once more for the objects whose owner this node proves dead.
        """
        thawed = await self.storage.thaw_many(idents, self.node_id, self.ttl)
        again = await self._proven_dead({i: claim for i, (claim, _) in thawed.items()})
        if again:
            thawed.update(await self.storage.thaw_many(again, self.node_id, self.ttl))
        await self._log_takeovers(claim for claim, _ in thawed.values())
        return thawed

    async def _proven_dead(self, claims: dict[Ident, Claim]) -> list[Ident]:
        """The refused objects whose owner this node proves (and declares) dead."""
        owners = {c.owner for c in claims.values() if not c.granted and c.owner is not None}
        if not owners:
            return []
        if not owners <= self.deaths.seen.keys():  # registered since the last heartbeat
            await self._refresh()
        dead = await self.deaths.bury(owners)
        return [i for i, c in claims.items() if not c.granted and c.owner in dead]

    async def _log_takeovers(self, claims: Iterable[Claim]) -> None:
        """One line for the first takeover from each dead node: who, whose and why."""
        for node_id in self.deaths.first_takeovers(claims):
            if not self.deaths.knows_death_of(node_id):  # our list is older than its death
                await self._refresh()
            log.warning("node %s takes over the objects of node %s, dead: %s",
                        self.node_id, node_id, self.deaths.why(node_id, self.ttl))

    def death_of(self, node_id: str) -> asyncio.Future[None]:
        """A future that resolves once ``node_id`` is seen dead (heartbeat too old, or proven).

        ``forget_death`` it when done waiting.
        """
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._deaths.setdefault(node_id, set()).add(waiter)
        return waiter

    def forget_death(self, node_id: str, waiter: asyncio.Future[None]) -> None:
        """Stop waiting for ``node_id``'s death."""
        waiters = self._deaths.get(node_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._deaths[node_id]

