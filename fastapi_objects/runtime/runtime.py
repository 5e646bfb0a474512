"""``Runtime``: the registry of live objects on this node, and the way calls reach them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

from .._exceptions import (
    CallTimeout,
    InvalidQuery,
    StorageUnavailable,
    UnknownMethod,
    UnknownObjectType,
)
from ..cluster import Moved
from ..pubsub import PubSub, Subscription, open_pubsub
from ..settings import ObjectsSettings, Options, redact
from ..storage import (
    STATUSES,
    JournalEntry,
    ObjectPage,
    ObjectQuery,
    Storage,
    TypeStats,
    decode_cursor,
    open_storage,
)
from ._deadline import _Deadline
from ._log import announce
from .activation import Activation, Stale
from .committer import GroupCommitter
from .connection import Connection, Transport
from .handle import Handle, _Handle
from .keys import validate_key, validate_key_prefix
from .methods import MethodSpec
from .object import DurableObject
from .placement import choose
from .routing import Elsewhere, Router, backoff
from .thawer import Thawer

T = TypeVar("T", bound=DurableObject[Any])
R = TypeVar("R")


@dataclass
class Counters:
    """Running totals since start."""

    thaws: int = 0
    hibernations: int = 0
    turns: int = 0
    conflicts: int = 0
    relayed: int = 0


@dataclass(frozen=True)
class RuntimeStats:
    """A snapshot of what this node's runtime holds and has done (see ``Runtime.stats``)."""

    active: int
    thaws: int
    hibernations: int
    turns: int
    commits: int
    batches: int
    conflicts: int
    forwarded: int = 0
    """Calls this node sent to the owner on another node."""
    takeovers: int = 0
    """Objects this node claimed after another node had owned them."""
    relayed: int = 0
    """Websocket clients attached here through another node's relay."""


class Runtime:
    """Durable objects without any web framework.

    Example::

        async with Runtime(objects=[Counter], database_url="sqlite+aiosqlite:///./x.db") as rt:
            await rt.create_tables()
            counter = rt.get(Counter, "abc")
            print(await counter.increment(2))

    Options (``database_url``, ``pubsub_url``, ``schema``, ``node_ttl``...) are the fields of
    ``ObjectsSettings``: given here, else ``OBJECTS_<NAME>`` in the environment, else the
    project's ``.env``, else the default (``sqlite+aiosqlite:///./objects.db`` for storage).
    """

    def __init__(
        self,
        objects: Sequence[type[DurableObject[Any]]] = (),
        database_url: str | None = None,
        *,
        settings: ObjectsSettings | None = None,
        **options: Unpack[Options],
    ) -> None:
        if settings is None:
            settings = ObjectsSettings.from_options(database_url=database_url, **options)
        elif database_url is not None or options:
            raise TypeError("pass either settings=ObjectsSettings(...) or options, not both")
        self.settings = settings
        self.database_url = settings.database_url
        # One process, one node: workers sharing a machine get ids of their own.
        self.node_id = settings.node_id or (
            f"{settings.machine}-{uuid.uuid4().hex[:6]}" if settings.machine
            else uuid.uuid4().hex[:12]
        )
        # Broadcasts cross nodes through PostgreSQL when the data lives there; an embedded
        # database means one node, so an in-process hub of this runtime's own is enough.
        self.pubsub_url = settings.pubsub_url or (
            self.database_url
            if self.database_url.startswith("postgresql")
            else f"memory://{self.node_id}"
        )
        schema = settings.db_schema
        self.pubsub: PubSub = open_pubsub(self.pubsub_url, node_id=self.node_id, schema=schema)
        self.types: dict[str, type[DurableObject[Any]]] = {}
        for cls in objects:
            self.register(cls)
        self.storage: Storage = open_storage(self.database_url, schema=schema)
        self.committer = GroupCommitter(self.storage, settings.max_batch, self.node_id)
        self.create_tables_on_start = (
            settings.create_tables
            if settings.create_tables is not None
            else not self.database_url.startswith("postgresql")
        )
        self.counters = Counters()
        self.routing = Router(self.storage, settings, self.node_id, self._lease_lost)
        self.thawer = Thawer(self.storage, self.node_id, settings.node_ttl)
        self._activations: dict[tuple[str, str], Activation] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def register(self, cls: type[DurableObject[Any]]) -> None:
        """Add an object class; its ``type_name`` must be unique in this runtime."""
        if not hasattr(cls, "state_model"):
            raise TypeError(f"{cls.__name__} must subclass DurableObject[YourStateModel]")
        other = self.types.get(cls.type_name)
        if other is not None and other is not cls:
            raise ValueError(
                f"type name {cls.type_name!r} is used by {other.__qualname__} and "
                f"{cls.__qualname__}; set type_name on one of them"
            )
        self.types[cls.type_name] = cls

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the runtime was started on."""
        if self._loop is None:
            raise RuntimeError(
                "the objects runtime is not started: use `async with Objects(...)` or the "
                "FastAPI lifespan (`FastAPI(lifespan=objects.lifespan)`)"
            )
        return self._loop

    async def start(self) -> None:
        """Connect to storage, start the group committer, and join the cluster as a node."""
        self._loop = asyncio.get_running_loop()
        await self.storage.start()
        if self.create_tables_on_start:
            await self.storage.create_tables()
        await self.pubsub.start()
        self.committer.start()
        self.thawer.start()
        await self.routing.start(self.serve_forwarded)
        schema = self.settings.db_schema
        announce(
            "fastapi_objects: node %s (internal %s), storage %s%s, pubsub %s",
            self.node_id, self.routing.node.address or "none", redact(self.database_url),
            f" (schema {schema})" if schema else "", redact(self.pubsub_url),
        )

    async def close(self) -> None:
        """Leave gracefully: hibernate every live object (releasing it), commit, deregister.

        From the start of the stop, other nodes' forwarded calls are answered "moved": they
        look the owner up again and claim each object once it is released here.
        """
        if self._loop is None:
            return
        self.routing.leave()
        await asyncio.gather(
            *(act.hibernate(force=True) for act in list(self._activations.values())),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.committer.close()
        await self.thawer.close()
        await self.routing.stop()
        await self.pubsub.close()
        await self.storage.close()
        self._loop = None

    def _lease_lost(self) -> None:
        """This node may no longer serve: drop every activation (its state may be stale)."""
        error = StorageUnavailable(
            f"node {self.node_id} lost its lease (it could not reach the database in time): "
            "the call was not acknowledged; retry"
        )
        for act in list(self._activations.values()):
            act.invalidate(error)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def create_tables(self) -> None:
        """Create the storage tables when missing (idempotent)."""
        await self.storage.create_tables()

    # -- calls -------------------------------------------------------------------------------

    def object_type(self, type_name: str) -> type[DurableObject[Any]]:
        """The registered class for ``type_name``, or ``UnknownObjectType``."""
        cls = self.types.get(type_name)
        if cls is None:
            known = ", ".join(sorted(self.types)) or "none"
            raise UnknownObjectType(f"unknown object type {type_name!r} (registered: {known})")
        return cls

    def get(self, cls: type[T], key: str) -> Handle[T]:
        """Return a handle to the object ``(cls, key)``; nothing is loaded until it is called."""
        if self.types.get(getattr(cls, "type_name", "")) is not cls:
            raise UnknownObjectType(
                f"{cls.__name__} is not registered: pass it in Objects(objects=[...])"
            )
        return _Handle(self, cls, validate_key(key))  # type: ignore[return-value]

    async def call(
        self, cls: type[DurableObject[Any]], key: str, method: str, args: dict[str, Any]
    ) -> Any:
        """Call ``method`` by name with keyword ``args``, validating both."""
        spec = cls.__objects_methods__.get(method)
        if spec is None:
            raise UnknownMethod(f"{cls.__name__} has no callable method {method!r}")
        return await self.invoke(cls, validate_key(key), spec, spec.validate(args))

    async def invoke(
        self, cls: type[DurableObject[Any]], key: str, spec: MethodSpec, args: dict[str, Any]
    ) -> Any:
        """Run a validated call on the object's one live instance, here or on its owner.

        While the owner is unknown or unreachable (it is dying, or moving), the call waits and
        looks again, bounded by ``call_timeout``; a forward is repeated only when it cannot
        have run.
        """
        deadline = _Deadline(self.loop, cls.call_timeout)
        try:
            attempt = 0
            while True:
                try:
                    return await self._on_live(
                        cls, key, lambda act, held: act.call(spec, args, held)
                    )
                except Elsewhere as owner:
                    try:
                        result = await self.routing.forward(
                            owner, cls.type_name, key, spec.name, args
                        )
                    except Moved as moved:
                        if moved.owner is None or attempt:  # no better idea: wait, look again
                            await backoff(attempt)
                        attempt += 1
                        continue
                    return spec.decode_result(result)
        except asyncio.CancelledError:
            if not deadline.expired():
                raise
            raise CallTimeout(
                f"{cls.type_name}:{key}.{spec.name}() overran call_timeout={cls.call_timeout}s: "
                "a turn still running was cancelled and rolled back (one already committing "
                "may have been applied)"
            ) from None
        finally:
            deadline.cancel()

    def locate(self, cls: type[DurableObject[Any]], key: str) -> Elsewhere | None:
        """Where a call for ``(cls, key)`` would go, from what this node knows (no I/O).

        ``None``: here (it is active here, or would be activated here); else the owner this
        node last saw, or the node placement picks. A guess: the call itself checks again.
        """
        ident = (cls.type_name, key)
        if ident in self._activations:
            return None
        owner = self.routing.known_owner(ident)
        if owner is not None:
            return owner
        target = choose(cls, key, self.node_id, self.routing.node.live)
        return None if target is None else Elsewhere(target.node_id, target.address)

    async def serve_forwarded(
        self, type_name: str, key: str, method: str, args: dict[str, Any]
    ) -> Any:
        """Run a call another node forwarded here; its result as JSON.

        ``Moved`` (the caller looks again; nothing ran) when this node does not own the object.
        """
        cls = self.object_type(type_name)
        spec = cls.__objects_methods__.get(method)
        if spec is None:
            raise UnknownMethod(f"{cls.__name__} has no callable method {method!r}")
        key, args = validate_key(key), spec.validate(args)
        if not self.routing.node.serving():  # whoever owns it now, it is not this node
            raise Moved(f"node {self.node_id} has no valid lease")
        deadline = _Deadline(self.loop, cls.call_timeout)
        try:
            result = await self._on_live(
                cls, key, lambda act, held: act.call(spec, args, held), forwarded=True
            )
        except Elsewhere as exc:
            raise Moved(
                f"{type_name}:{key} is owned by {exc.node_id}", exc.node_id, exc.address
            ) from None
        except asyncio.CancelledError:
            if not deadline.expired():
                raise
            raise CallTimeout(
                f"{type_name}:{key}.{method}() overran call_timeout={cls.call_timeout}s"
            ) from None
        finally:
            deadline.cancel()
        return spec.encode_result(result)

    async def _on_live(
        self,
        cls: type[DurableObject[Any]],
        key: str,
        fn: Callable[[Activation, bool], Awaitable[R]],
        forwarded: bool = False,
    ) -> R:
        """Run ``fn(activation, held)`` on this node's instance, thawing it (``held``) if needed.

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
            act = self._activations.get(ident)
            try:
                if act is None:
                    owner = self.routing.known_owner(ident)
                    if owner is not None and not (forwarded and not checked):
                        raise owner
                    if not forwarded:  # (a forwarded call was placed by its sender)
                        target = choose(cls, key, self.node_id, node.live)
                        if target is not None:
                            raise Elsewhere(target.node_id, target.address)
                    checked = True
                    return await fn(await self._activate(cls, key), True)
                return await fn(act, False)
            except Stale:
                continue

    async def _activate(self, cls: type[DurableObject[Any]], key: str) -> Activation:
        """Claim and thaw ``(cls, key)``; the caller gets it with the gate held.

        Raises ``Stale`` (look again) when the claim was refused: the calls that queued on
        this attempt meanwhile then find the owner the claim named.
        """
        ident = (cls.type_name, key)
        act = Activation(self, cls, key)  # created holding its own gate
        self._activations[ident] = act
        try:
            claim, checkpoint = await self.thawer.thaw(cls.type_name, key)
            self.routing.claimed(ident, claim)
            if not claim.granted:
                raise Stale
            act.epoch = claim.epoch
            await act.load(checkpoint)
        except BaseException:
            act.close()
            act.gate.leave(False)
            raise
        return act

    def forget(self, act: Activation) -> None:
        """Remove a closed activation from the registry (if it is still the registered one)."""
        ident = (act.cls.type_name, act.key)
        if self._activations.get(ident) is act:
            del self._activations[ident]

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a background task owned by the runtime (cancelled on close)."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def publish_nowait(
        self, topic: str, event: str, payload: Any, *, exclude: str | None = None
    ) -> None:
        """Publish without waiting: local subscribers now, other nodes in order, soon."""
        self.pubsub.publish_nowait(topic, event, payload, exclude=exclude)

    async def publish(self, topic: str, event: str, payload: Any = None) -> None:
        """Publish ``event`` on ``topic`` (e.g. ``"counter:abc:debug"``) to every node.

        Object broadcasts use ``"{type}:{key}"``; app code may publish on any topic.
        """
        await self.pubsub.publish(topic, event, payload)

    def subscribe(self, topic: str, *, max_queue: int = 1024) -> Subscription:
        """Subscribe to ``topic``: ``async with objects.subscribe(t) as sub: async for m in sub``.

        A subscriber that falls ``max_queue`` messages behind is closed (``SubscriptionOverflow``)
        rather than slowing the publisher down.
        """
        return self.pubsub.subscribe(topic, max_queue=max_queue)

    # -- attached clients --------------------------------------------------------------------

    async def attach(
        self,
        cls: type[DurableObject[Any]],
        key: str,
        transport: Transport,
        params: dict[str, Any] | None = None,
        *,
        relayed: bool = False,
    ) -> Connection:
        """Attach a client to ``(cls, key)``, thawing it; runs ``on_connect`` (may reject).

        Raises ``Elsewhere`` when another node owns the object: the web integration then
        relays the client to it. ``relayed``: the client comes from another node that found
        this one named as the owner (so the database decides, not this node's memory).
        """
        key = validate_key(key)
        conn = Connection(f"{cls.type_name}:{key}", transport, params)
        if relayed:
            self.counters.relayed += 1
        async with asyncio.timeout(cls.call_timeout):
            await self._on_live(
                cls, key, lambda act, held: act.attach(conn, held), forwarded=relayed
            )
        return conn

    async def message(self, conn: Connection, frame: dict[str, Any]) -> None:
        """Run the object's ``on_message(conn, frame)`` as a turn for an attached client."""
        act = conn.activation
        if act is None or act.closed:
            raise StorageUnavailable(f"{conn.topic} was reloaded; reconnect to continue")
        try:
            await act.run(lambda obj: obj.on_message(conn, frame), {})
        except Stale:
            raise StorageUnavailable(f"{conn.topic} was reloaded; reconnect to continue") from None

    async def detach(self, conn: Connection) -> None:
        """Detach a client; runs ``on_disconnect``. Idempotent."""
        act = conn.activation
        if act is not None and not act.closed:
            try:
                await act.detach(conn)
            except Stale:
                pass

    # -- reading without thawing -------------------------------------------------------------

    async def journal(
        self, cls: type[DurableObject[Any]], key: str, after_rev: int = 0, limit: int | None = None
    ) -> list[JournalEntry]:
        """Read an object's committed journal entries after ``after_rev``, in order."""
        return await self.storage.read_journal(cls.type_name, validate_key(key), after_rev, limit)

    async def query(
        self,
        type: type[DurableObject[Any]] | str | None = None,
        *,
        status: str | None = None,
        status_in: Sequence[str] | None = None,
        key_prefix: str | None = None,
        state_version: int | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> ObjectPage:
        """List stored objects without thawing them, ``limit`` at a time, by ``(type, key)``.

        Example: ``page = await objects.query(Counter, status="hibernated", key_prefix="user:")``
        then ``objects.query(..., cursor=page.next_cursor)`` for the next page.
        """
        type_name = type if isinstance(type, str) or type is None else type.type_name
        if type_name is not None:
            self.object_type(type_name)
        if key_prefix:
            validate_key_prefix(key_prefix)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InvalidQuery(f"limit must be a whole number from 1 to 10000, got {limit!r}")
        for value in (status, *(status_in or ())):
            if value is not None and value not in STATUSES:
                raise InvalidQuery(f"status must be one of {', '.join(STATUSES)}, got {value!r}")
        if cursor is not None:
            try:
                decode_cursor(cursor)
            except ValueError:
                raise InvalidQuery(
                    f"malformed cursor {cursor[:80]!r}: pass back a page's next_cursor unchanged"
                ) from None
        return await self.storage.query(
            ObjectQuery(
                type=type_name, status=status,
                status_in=tuple(status_in) if status_in is not None else None,
                key_prefix=key_prefix, state_version=state_version, updated_after=updated_after,
                updated_before=updated_before, limit=limit, cursor=cursor,
            )
        )

    async def type_stats(self) -> list[TypeStats]:
        """Count stored objects per type and status."""
        return await self.storage.stats()

    def stats(self) -> RuntimeStats:
        """What this node holds now and has done since start."""
        c = self.counters
        forwarder = self.routing.forwarder
        return RuntimeStats(
            active=len(self._activations), thaws=c.thaws, hibernations=c.hibernations,
            turns=c.turns, commits=self.committer.commits, batches=self.committer.batches,
            conflicts=c.conflicts, forwarded=forwarder.forwarded if forwarder else 0,
            takeovers=self.routing.node.takeovers, relayed=c.relayed,
        )
