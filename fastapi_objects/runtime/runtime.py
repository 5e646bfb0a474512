"""``Runtime``: durable objects without any web framework — the public surface of a node.

The engine (activations, committer, thawer, routing) is the ``Host`` it holds; the web
integration reaches the node through ``gateway`` only.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, Unpack

from .._exceptions import UnknownObjectType
from ..pubsub import PubSub, Subscription, open_pubsub
from ..settings import ObjectsSettings, Options
from ..storage import (
    JournalEntry,
    KeptState,
    ObjectPage,
    Storage,
    TypeStats,
    open_storage,
)
from ..storage.urls import redact
from ._log import announce
from .gateway import Gateway
from .handle import Handle
from .host import Host
from .keys import validate_key
from .methods import method_spec
from .object import DurableObject
from .observe import new_collector, start_tracing
from .queries import object_query
from .queues import Handler, ObjectsQueue, Worker, Workers
from .stats import RuntimeStats

if TYPE_CHECKING:
    from .prometheus import ObjectsCollector

T = TypeVar("T", bound=DurableObject[Any])


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
    ``tracer_provider``: an OpenTelemetry ``TracerProvider`` for this node's spans, instead
    of the global one.
    """

    def __init__(
        self,
        objects: Sequence[type[DurableObject[Any]]] = (),
        database_url: str | None = None,
        *,
        settings: ObjectsSettings | None = None,
        tracer_provider: Any = None,
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
        self.create_tables_on_start = (
            settings.create_tables
            if settings.create_tables is not None
            else not self.database_url.startswith("postgresql")
        )
        self.register(ObjectsQueue)  # the built-in queue type (objects.queue(name))
        self._host = Host(self, settings, self.node_id, self.storage, self.pubsub, self.types)
        self.gateway = Gateway(self._host, self.pubsub)
        """The web integration's way into this node (``fastapi_objects.fastapi`` only)."""
        self._workers = Workers(self)
        self._tracer_provider = tracer_provider
        self._traced: bool | None = None  # decided at the first start (see _trace)
        if settings.tracing or tracer_provider is not None:
            self._trace()  # asked for: MissingDependency now rather than at the start
        self._collector: ObjectsCollector | None = None

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
        """The event loop the runtime was started on (``RuntimeError`` before the start)."""
        return self._host.loop

    def _trace(self) -> None:
        """Decide once whether this node makes spans (see ``observe.start_tracing``)."""
        if self._traced is None:
            tracing = start_tracing(self.settings.tracing, self._tracer_provider, self.node_id)
            if tracing is not None:
                self._host.observe(tracing, propagation=tracing)
            self._traced = tracing is not None

    def metrics(self) -> ObjectsCollector:
        """This node's Prometheus collector (the ``prometheus`` extra), counting from now on.

        ``registry.register(objects.runtime.metrics())`` for a registry of your own; the
        families are listed in the README. Calls are counted from the first ``metrics()``
        (``Objects.metrics_router()`` makes it), so ask before the app serves.
        """
        if self._collector is None:
            self._collector = new_collector(self._host)
        return self._collector

    async def start(self) -> None:
        """Connect to storage, start the group committer, and join the cluster as a node."""
        self._trace()
        await self.storage.start()
        if self.create_tables_on_start:
            await self.storage.create_tables()
        await self.pubsub.start()
        await self._host.start()
        self._workers.start()
        schema = self.settings.db_schema
        announce(
            "fastapi_objects: node %s (pid %d, internal %s), storage %s%s (%s), pubsub %s",
            self.node_id, os.getpid(), self._host.routing.node.address or "none",
            redact(self.database_url), f", schema {schema}" if schema else "",
            self.settings.database_url_source, redact(self.pubsub_url),
        )

    async def close(self) -> None:
        """Leave gracefully: hibernate every live object (releasing it), commit, deregister."""
        if not self._host.started:
            return
        await self._workers.stop()
        await self._host.stop()
        await self.pubsub.close()
        await self.storage.close()

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
        return self._host.object_type(type_name)

    def get(self, cls: type[T], key: str) -> Handle[T]:
        """Return a handle to the object ``(cls, key)``; nothing is loaded until it is called."""
        if self.types.get(getattr(cls, "type_name", "")) is not cls:
            raise UnknownObjectType(
                f"{cls.__name__} is not registered: pass it in Objects(objects=[...])"
            )
        return cls.__objects_handle__(self._host.calls, cls, validate_key(key))  # type: ignore[return-value]

    async def call(
        self, cls: type[DurableObject[Any]], key: str, method: str, args: dict[str, Any]
    ) -> Any:
        """Call ``method`` by name with keyword ``args``, validating both."""
        spec = method_spec(cls, method)
        return await self._host.calls.invoke(cls, validate_key(key), spec, spec.validate(args))

    async def delete(self, cls: type[DurableObject[Any]], key: str) -> None:
        """Delete the object ``(cls, key)`` for good: state, journal and alarms.

        It runs on the object's owner, after the turns in flight, fenced by its ownership; the
        next call starts the object fresh. Inside a turn, use ``self.delete()``.
        """
        await self._host.calls.delete(cls, validate_key(key))

    # -- operator actions, as turns on the owner ---------------------------------------------

    async def edit(
        self, cls: type[DurableObject[Any]], key: str, patch: Any, *, rev: int, by: Any = None
    ) -> dict[str, Any]:
        """Apply an RFC 6902 JSON Patch to the state, if the object is still at ``rev``.

        A turn on the object's owner (fenced and gated like any call): the patched state is
        validated by the state model (``InvalidEdit`` otherwise), ``StaleRevision`` if the
        object moved past ``rev``; journaled as ``objects:edit`` with the patch, its undo and
        ``by`` (who made it), and broadcast. Returns ``{"rev", "state"}`` after the commit.
        """
        return await self._host.operator.edit(cls, validate_key(key), patch, rev, by)

    async def restore(
        self, cls: type[DurableObject[Any]], key: str, *, rev: int | None = None,
        at: datetime | str | None = None, by: Any = None,
    ) -> dict[str, Any]:
        """Restore the state the object held at ``rev`` (or at the time ``at``).

        From the states kept by the class's ``history`` option, or, for an event-sourced
        object, from its journal (``rev`` is then a journal rev: snapshot plus events). A
        journaled turn on the owner (``objects:restore``), broadcast to attached clients, and
        itself undoable. Returns ``{"rev", "restored", "state"}``.
        """
        return await self._host.operator.restore(cls, validate_key(key), rev, at, by)

    async def history(
        self, cls: type[DurableObject[Any]], key: str, before_rev: int | None = None,
        limit: int = 100,
    ) -> list[KeptState]:
        """The object's kept states (``history`` option), newest first, without thawing it."""
        return await self.storage.history(cls.type_name, validate_key(key), before_rev, limit)

    async def connections(self, cls: type[DurableObject[Any]], key: str) -> list[dict[str, Any]]:
        """The clients attached to the object (id, tags, state), asked of its owner.

        Never wakes it: an object no node holds has none.
        """
        return await self._host.operator.connections(cls, validate_key(key))

    def queue(self, name: str) -> Handle[ObjectsQueue]:
        """A handle to the durable queue ``name``: ``await objects.queue("emails").enqueue(p)``.

        Methods: ``enqueue(payload, key=None, delay=0, max_attempts=5)``, ``claim``,
        ``heartbeat``, ``complete`` (and ``claim_many``, ``heartbeat_many``, ``complete_many``:
        a batch in one turn), ``fail``, ``retry(job_id)``, ``stats()``, ``jobs(dead=False)``.
        """
        return self.get(ObjectsQueue, name)

    def worker(
        self, queue: str, *, concurrency: int = 4, lease: float = 30.0
    ) -> Callable[[Handler], Handler]:
        """Run the decorated ``async def fn(job)`` on jobs of ``queue``, on every node.

        Example::

            @objects.worker("emails", concurrency=4, lease=30.0)
            async def send(job):
                await deliver(job.payload)
        """
        validate_key(queue)

        def register(fn: Handler) -> Handler:
            self._workers.add(Worker(queue, fn, concurrency, lease))
            return fn

        return register

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
        return await self.storage.query(object_query(
            type_name, status=status, status_in=status_in, key_prefix=key_prefix,
            state_version=state_version, updated_after=updated_after,
            updated_before=updated_before, limit=limit, cursor=cursor,
        ))

    async def type_stats(self) -> list[TypeStats]:
        """Count stored objects per type and status."""
        return await self.storage.stats()

    def stats(self) -> RuntimeStats:
        """What this node holds now and has done since start."""
        return self._host.stats()
