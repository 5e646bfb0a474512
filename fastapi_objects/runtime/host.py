"""``Host``: the engine of one node — its live objects, and how calls reach them.

It owns what the public ``Runtime`` leaves out of its surface: the registry of activations,
the group committer, the thawer, the routing seam to the cluster, background tasks and
counters. Activations see it only through their narrow ``ActivationHost`` protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from .._exceptions import Overloaded, StorageUnavailable, UnknownObjectType
from ..cluster import Moved
from ..pubsub import PubSub
from ..settings import ObjectsSettings
from ..storage import Storage
from .activation import Activation
from .alarms import ALARM_CALL, AlarmDelivery, keeps_alarms
from .calls import Calls
from .committer import GroupCommitter
from .connection import Connection, Transport
from .history import HistoryPruner
from .keys import validate_key
from .object import DurableObject
from .observe import Observer, Propagation, combine
from .operator import Operator
from .placement import choose
from .queues import QUEUE_TYPE
from .routing import Elsewhere, Router
from .sleepers import Gone, Sleepers
from .stats import Counters, RuntimeStats
from .thawer import Thawer
from .timers import Wheel
from .turn import Stale

if TYPE_CHECKING:
    from .runtime import Runtime

R = TypeVar("R")
EVICTION_SAMPLE = 32
"""How many of the longest-live objects ``max_active`` eviction looks at (an approximate LRU)."""

class Host:
    """The node's live objects and the way calls reach them (here, or forwarded).

    Its parts: the group committer, the thawer, the router (the cluster seam), ``calls``
    (the call paths), ``alarms`` (the alarm poller), ``operator`` (edits and restores, as
    turns), ``history`` (pruning kept states) and ``timers`` (call deadlines and idle checks
    on one loop timer).
    """

    def __init__(
        self,
        public: Runtime,
        settings: ObjectsSettings,
        node_id: str,
        storage: Storage,
        pubsub: PubSub,
        types: dict[str, type[DurableObject[Any]]],
    ) -> None:
        self.public = public  # what objects see as ``self.objects``
        self.settings = settings
        self.node_id = node_id
        self.storage = storage
        self.pubsub = pubsub
        self.types = types
        self.committer = GroupCommitter(storage, settings.max_batch, node_id)
        self.routing = Router(storage, settings, node_id, self.lease_lost)
        self.thawer = Thawer(storage, self.routing.node.thaw_many)
        self.counters = Counters()
        self.clock: Callable[[], datetime] = _utc_now  # expiries' wall time (tests move it)
        self.timers = Wheel()
        self.activations: dict[tuple[str, str], Activation] = {}
        self.leaving = 0  # activations hibernating to make room (max_active)
        self.stopping = False  # stop() began: nothing is activated here any more
        self.sleepers = Sleepers(self.on_live, self.routing.node.serving)
        self.calls = Calls(
            self.activations, self.on_live, self.routing, self.timers, self.object_type
        )
        self.alarms = AlarmDelivery(
            types, storage, self.routing.node, self.activations, self.calls.route,
            self.calls.serve_here, self.spawn,
        )
        self.calls.internal[ALARM_CALL] = self.alarms.serve
        self.observer: Observer | None = None  # metrics, traces: see observe()
        self.spans: Observer | None = None  # the observer, if it is told of every turn
        self._observers: list[Observer] = []
        self.operator = Operator(
            storage, self.calls, self.activations, self.routing, self.object_type, self.sleepers
        )
        self.history = HistoryPruner(storage, types)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the runtime was started on."""
        if self._loop is None:
            raise RuntimeError(
                "the objects runtime is not started: use `async with Objects(...)` or the "
                "FastAPI lifespan (`FastAPI(lifespan=objects.lifespan)`)"
            )
        return self._loop

    @property
    def started(self) -> bool:
        """Whether ``start`` ran and ``stop`` did not yet."""
        return self._loop is not None

    async def start(self) -> None:
        """Start the writers and join the cluster (storage and pub/sub are started)."""
        self._loop = asyncio.get_running_loop()
        self.stopping = False
        self.timers.start(self._loop)
        self.committer.start()
        self.thawer.start()
        await self.routing.start(self.calls.serve_forwarded)
        self.alarms.start()
        self.history.start()

    async def stop(self) -> None:
        """Leave gracefully: hibernate every live object (releasing it), commit, deregister.

        From the start of the stop, other nodes' forwarded calls are answered "moved": they
        look the owner up again and claim each object once it is released here.
        """
        self.stopping = True  # no activation from now on: it could not hibernate or commit
        self.routing.leave()
        self.sleepers.close_all(f"node {self.node_id} is leaving; reconnect")
        await self.alarms.stop()
        await self.history.stop()
        await asyncio.gather(
            *(act.idle.hibernate(force=True) for act in list(self.activations.values())),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.committer.close()
        await self.thawer.close()
        await self.routing.stop()
        self.timers.close()
        self._loop = None

    def observe(self, observer: Observer, propagation: Propagation | None = None) -> None:
        """Report to ``observer`` too from now on; ``propagation`` carries traces to peers.

        The parts that report get the runtime's one observer (``combine``): the call path,
        the committer, and, through ``self.observer``, activations and thaws; through
        ``self.spans`` only if it makes spans, turns and the commits joining a batch (what
        every turn would pay for otherwise).
        """
        self._observers.append(observer)
        combined = combine(self._observers)
        self.observer = self.calls.observer = self.committer.observer = combined
        self.spans = combined if combined.spans else None
        if propagation is not None:
            self.routing.propagation = propagation

    def lease_lost(self) -> None:
        """This node may no longer serve: drop every activation (its state may be stale)."""
        error = StorageUnavailable(
            f"node {self.node_id} lost its lease (it could not reach the database in time): "
            "the call was not acknowledged; retry"
        )
        for act in list(self.activations.values()):
            act.invalidate(error)

    def object_type(self, type_name: str) -> type[DurableObject[Any]]:
        """The registered class for ``type_name``, or ``UnknownObjectType``."""
        cls = self.types.get(type_name)
        if cls is None:
            known = ", ".join(sorted(n for n in self.types if n != QUEUE_TYPE)) or "none"
            raise UnknownObjectType(f"unknown object type {type_name!r} (registered: {known})")
        return cls

    async def on_live(
        self,
        cls: type[DurableObject[Any]],
        key: str,
        here: Callable[[Activation, bool], Awaitable[R]],
        forwarded: bool = False,
    ) -> R:
        """Run ``here(activation, held)`` on this node's instance, thawing it (``held``) if needed.

        An instance that closed meanwhile (hibernated, fenced out) raises ``Stale``: go again
        with a fresh one. ``Elsewhere`` when another live node owns the object. A call
        ``forwarded`` here asks the database, not the owners this node remembers: the sender
        found this node named as the owner there.
        """
        ident = (cls.type_name, key)
        node = self.routing.node
        checked = False
        while True:
            if not node.serving():
                await node.ready()
            act = self.activations.get(ident)
            try:
                if act is None:
                    owner = self.routing.known_owner(ident)
                    if owner is not None and not (forwarded and not checked):
                        raise owner
                    if not forwarded:  # (a forwarded call was placed by its sender)
                        target = choose(cls, key, self.node_id, node.live)
                        if target is not None:
                            raise Elsewhere(target.node_id, target.address)
                    if self.stopping:
                        raise self._not_activated(cls, key, forwarded)
                    checked = True
                    return await here(await self.activate(cls, key), True)
                return await here(act, False)
            except Stale:
                continue

    def _not_activated(
        self, cls: type[DurableObject[Any]], key: str, forwarded: bool
    ) -> Exception:
        """Why a stopping node does not activate ``(cls, key)``: nothing ran.

        Its thawer and committer close once its objects hibernated, so an object thawed now
        would never hibernate or commit, and a call on it would wait for nothing. A peer's
        call gets ``Moved`` (it looks again, and claims the object once this node released
        it); a call of this node's own fails with ``StorageUnavailable``.
        """
        if forwarded:
            return Moved(f"node {self.node_id} is leaving: nothing ran")
        return StorageUnavailable(
            f"node {self.node_id} is stopping: {cls.type_name}:{key} was not activated and the "
            "call did not run; retry"
        )

    async def activate(self, cls: type[DurableObject[Any]], key: str) -> Activation:
        """Claim and thaw ``(cls, key)``; the caller gets it with the gate held.

        Raises ``Stale`` (look again) when the claim was refused: the calls that queued on
        this attempt meanwhile then find the owner the claim named.
        """
        ident = (cls.type_name, key)
        making_room = None
        if len(self.activations) - self.leaving >= self.settings.max_active:
            making_room = self._make_room()
        act = Activation(self, cls, key)  # created holding its own gate
        self.activations[ident] = act
        observer = self.observer
        token = None if observer is None else observer.thaw(cls.type_name, key)
        try:
            if making_room is not None:  # the object waits for its room, holding its gate
                await asyncio.wait([making_room])
            claim, checkpoint, alarms = await self.thawer.thaw(
                cls.type_name, key, keeps_alarms(cls)
            )
            self.routing.claimed(ident, claim)
            if not claim.granted:
                raise Stale
            act.record.epoch = claim.epoch
            await act.load(checkpoint, alarms)
        except BaseException as exc:
            act.close()
            act.gate.leave(False)
            if observer is not None:
                observer.thaw_end(token, cls.type_name, exc)
            raise
        if observer is not None:
            observer.thaw_end(token, cls.type_name, None)
        return act

    def _make_room(self) -> asyncio.Task[None]:
        """At ``max_active``: hibernate the least recently used idle object (``Overloaded``).

        The LRU is approximated as Redis does: among the ``EVICTION_SAMPLE`` objects live the
        longest (the registry keeps activation order), the idle one used least recently goes.
        The new object waits for it to have left (so a storm of new keys cannot outrun the
        cap); the objects already on their way out count as room made (``leaving``).
        """
        candidates = []
        for act in self.activations.values():
            if not act.busy() and not act.idle.leaving:
                candidates.append(act)
            if len(candidates) >= EVICTION_SAMPLE:
                break
        if not candidates:
            raise Overloaded(
                f"node {self.node_id} holds max_active={self.settings.max_active} objects, all "
                "busy; retry later (or raise max_active)",
                retry_after=1.0,
            )
        victim = min(candidates, key=lambda act: act.idle.last_used)
        self.leave(victim, True)
        self.counters.evictions += 1
        return self.spawn(victim.idle.hibernate(evict=True))

    def leave(self, act: Activation, leaving: bool) -> None:
        """Count ``act`` as on its way out of memory to make room (or no longer)."""
        if act.idle.leaving != leaving:
            act.idle.leaving = leaving
            self.leaving += 1 if leaving else -1

    def forget(self, act: Activation) -> None:
        """Remove a closed activation from the registry (if it is still the registered one)."""
        ident = (act.cls.type_name, act.key)
        if self.activations.get(ident) is act:
            del self.activations[ident]
        self.leave(act, False)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a background task owned by the runtime (cancelled on close)."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def publish_nowait(
        self, topic: str, event: str, payload: Any, *, exclude: str | None = None
    ) -> None:
        """Publish without waiting: local subscribers now, other nodes in order, soon."""
        self.pubsub.publish_nowait(topic, event, payload, exclude=exclude)

    # -- attached clients --------------------------------------------------------------------

    async def attach(
        self,
        cls: type[DurableObject[Any]],
        key: str,
        transport: Transport,
        *,
        query: dict[str, str] | None = None,
        auth: dict[str, Any] | None = None,
        relayed: bool = False,
    ) -> Connection:
        """Attach a client to ``(cls, key)``, thawing it; runs ``on_connect`` (may reject).

        Raises ``Elsewhere`` when another node owns the object: the web integration then
        relays the client to it. ``relayed``: the client comes from another node that found
        this one named as the owner (so the database decides, not this node's memory).
        """
        key = validate_key(key)
        conn = Connection(f"{cls.type_name}:{key}", transport, query=query, auth=auth)
        if relayed:
            self.counters.relayed += 1
        async with asyncio.timeout(cls.call_timeout):
            await self.on_live(
                cls, key, lambda act, held: act.attached().attach(conn, held), forwarded=relayed
            )
        return conn

    async def message(self, conn: Connection, frame: dict[str, Any]) -> None:
        """Run the object's ``on_message(conn, frame)`` as a turn for an attached client.

        A client whose object hibernated (even while this frame waited for its turn) wakes
        it here (``sleepers.py``), in its place among the object's calls.
        """
        def here(act: Activation, held: bool) -> Awaitable[None]:
            return act.run(lambda obj: obj.on_message(conn, frame), {}, held=held,
                           name="on_message")

        while True:
            act = conn.activation
            try:
                if act is not None and not act.closed:
                    return await here(act, False)
                return await self.sleepers.run(conn, here)
            except Stale:
                continue
            except Gone:
                raise StorageUnavailable(
                    f"{conn.topic} was reloaded; reconnect to continue"
                ) from None

    async def detach(self, conn: Connection) -> None:
        """Detach a client; runs ``on_disconnect``. Idempotent.

        A client whose object hibernated wakes it to run ``on_disconnect`` (as Cloudflare's
        ``webSocketClose`` does); not if another node holds it now, or this one is leaving.
        """
        act = conn.activation
        if (act is None or act.closed) and self.sleepers.asleep(conn):
            act = await self.sleepers.wake_to_leave(conn)
        if act is not None and not act.closed and act.clients is not None:
            try:
                await act.clients.detach(conn)
            except Stale:
                pass

    def stats(self) -> RuntimeStats:
        """What this node holds now and has done since start."""
        c = self.counters
        forwarder = self.routing.forwarder
        return RuntimeStats(
            active=len(self.activations), thaws=c.thaws, hibernations=c.hibernations,
            turns=c.turns, commits=self.committer.commits, batches=self.committer.batches,
            conflicts=c.conflicts, forwarded=forwarder.forwarded if forwarder else 0,
            takeovers=self.routing.node.takeovers, relayed=c.relayed, evictions=c.evictions,
            expired=c.expired, sleeping=self.sleepers.count,
        )


def _utc_now() -> datetime:
    return datetime.now(UTC)
