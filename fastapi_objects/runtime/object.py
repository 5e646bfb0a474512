"""``DurableObject``: the class users subclass, and its event-sourced variant."""

from __future__ import annotations

import typing
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

import pydantic

from ..storage import Alarm, AlarmWrite
from .alarms.schedule import check_alarm_name, make_alarm
from .connection import check_event
from .handle import _Handle, handle_class
from .keys import snake_case, validate_type_name
from .kinds import check_kind, refuse_in_memory
from .methods import MethodSpec, discover
from .presence import Presence
from .sync import Mode, sync_mode

if TYPE_CHECKING:
    from .activation import Activation
    from .alarms import AlarmClock
    from .connection import Connection
    from .runtime import Runtime

S = TypeVar("S", bound=pydantic.BaseModel)
E = TypeVar("E")


def _type_arg(cls: type, generic: type, index: int) -> Any:
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            origin = typing.get_origin(base)
            if isinstance(origin, type) and issubclass(origin, generic):
                args = typing.get_args(base)
                if len(args) > index and not isinstance(args[index], TypeVar):
                    return args[index]
    return None


def _state_model(cls: type) -> type[pydantic.BaseModel] | None:
    model = _type_arg(cls, DurableObject, 0)
    if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
        return model
    return None


def _history_option(cls: type) -> timedelta | None:
    """The class's ``history`` window, if it sets one (a method named so is not the option)."""
    value = getattr(cls, "history", None)
    if value is None or callable(value) or isinstance(value, staticmethod | classmethod):
        return None
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise TypeError(f"{cls.__name__}.history must be a positive timedelta, e.g. "
                        "timedelta(days=7)")
    if issubclass(cls, EventSourced):
        raise TypeError(
            f"{cls.__name__}: event-sourced objects restore from their journal; "
            "history is for snapshot objects"
        )
    if getattr(cls, "persistence", "durable") == "memory":
        raise TypeError(f"{cls.__name__}: a memory object keeps nothing, so no history")
    return value


class DurableObject(Generic[S]):
    """A keyed, singleton, durable object whose state is a pydantic model.

    Public ``async def`` methods are callable through a ``Handle``; calls run one turn at a time
    and each turn that changed ``self.state`` is committed before its caller gets the result.
    Browsers reach nothing unless the class says so: ``public = True`` to attach, and
    ``@client_callable`` on each method a client frame may call.

    Example::

        class CounterState(BaseModel):
            value: int = 0

        class Counter(DurableObject[CounterState]):
            async def increment(self, by: int = 1) -> int:
                self.state.value += by
                return self.state.value

    Class options: ``type_name`` (default: the class name in snake_case), ``state_version``
    (with ``migrate_state``), ``idle_timeout`` (seconds without turns before hibernating),
    ``hibernate_with_clients`` (default ``True``: idle clients do not keep the object in
    memory; their sockets stay open and it thaws for their next frame; ``False``: attached
    clients keep it awake), ``call_timeout`` (seconds), ``max_queue`` (calls waiting before
    ``Overloaded``), ``max_connections`` (websocket clients attached at once), ``placement``
    (where an object that no node holds is activated: ``"local"``, the node the first call
    lands on; ``"hash"``, the node chosen by rendezvous hashing of the key over the live
    nodes; ``"region"``, a node of ``region``), ``alarm_retries`` and ``alarm_backoff`` (a
    raising ``on_alarm`` is retried after ``alarm_backoff * 2**n`` seconds, ``alarm_retries``
    times, then marked failed), ``public`` (default ``False``; ``True`` lets browsers attach through
    ``objects.router`` and call the methods marked ``@client_callable``), ``persistence``
    (``"durable"``, or ``"memory"``: one live instance, nothing written, gone when it
    hibernates), ``expire_after`` (a ``timedelta``: a durable object left that long without
    calls, clients or alarms is deleted), ``history`` (a ``timedelta``: keep each
    committed state that long, for ``objects.restore``; event-sourced objects restore from
    their journal) and ``sync_state`` (``True``: every attached client gets the state as
    ``objects:state`` and a patch after each commit that changed it; define ``client_view``
    instead for a view per connection; ``runtime/sync.py``).
    """

    type_name: ClassVar[str]
    state_model: ClassVar[type[pydantic.BaseModel]]
    state_version: ClassVar[int] = 1
    idle_timeout: ClassVar[float] = 30.0
    hibernate_with_clients: ClassVar[bool] = True  # idle clients let it hibernate (sleepers.py)
    call_timeout: ClassVar[float] = 30.0
    max_queue: ClassVar[int] = 1024
    max_connections: ClassVar[int] = 32_768
    placement: ClassVar[Literal["local", "hash", "region"]] = "local"
    region: ClassVar[str | None] = None
    public: ClassVar[bool] = False  # True: browsers may attach through objects.router
    alarm_retries: ClassVar[int] = 6
    alarm_backoff: ClassVar[float] = 2.0
    persistence: ClassVar[Literal["durable", "memory"]] = "durable"
    expire_after: ClassVar[timedelta | None] = None
    sync_state: ClassVar[bool] = False  # True: clients get the state and its patches
    # `history = timedelta(days=7)` keeps committed states (restore). Not declared here: a
    # base attribute would hide the app's own methods named `history` (see _history_option).
    __objects_history__: ClassVar[timedelta | None] = None
    __objects_methods__: ClassVar[dict[str, MethodSpec]]
    __objects_sync__: ClassVar[Mode | None] = None
    __objects_handle__: ClassVar[type[_Handle[Any]]]

    key: str
    state: S
    objects: Runtime
    _activation: Activation

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model = _state_model(cls)
        if model is None:
            return  # a generic intermediate class, not a concrete object type
        cls.state_model = model
        cls.type_name = validate_type_name(cls.__dict__.get("type_name", snake_case(cls.__name__)))
        cls.__objects_methods__ = discover(cls, DurableObject)
        cls.__objects_handle__ = handle_class(cls)
        if cls.placement not in ("local", "hash", "region"):
            raise TypeError(f"{cls.__name__}.placement must be 'local', 'hash' or 'region'")
        if cls.placement == "region" and not cls.region:
            raise TypeError(f"{cls.__name__}: placement = 'region' needs region = '<name>'")
        check_kind(cls, event_sourced=issubclass(cls, EventSourced))
        cls.__objects_history__ = _history_option(cls)
        cls.__objects_sync__ = sync_mode(cls)

    # -- hooks -------------------------------------------------------------------------------

    async def on_activate(self) -> None:
        """Run when the object is loaded into memory (first call or attach after hibernation).

        Clients that stayed attached while it hibernated are already in ``connections()``.
        """

    async def on_hibernate(self) -> None:
        """Run before the object leaves memory after ``idle_timeout``; changes are committed."""

    async def on_connect(self, conn: Connection) -> None:
        """Run when a websocket client attaches; raise ``ConnectionRejected`` to refuse it.

        Once per client: not again when the object thaws with the client still attached.
        """

    async def on_message(self, conn: Connection, frame: dict[str, Any]) -> None:
        """Run for a client frame that is not a call (a custom event)."""

    async def on_disconnect(self, conn: Connection) -> None:
        """Run when a websocket client detaches (a hibernated object thaws to run it)."""

    async def on_alarm(self, alarm: Alarm) -> None:
        """Run (as a turn) when an alarm set with ``set_alarm`` is due; define it to use alarms.

        ``alarm.name``, ``.payload``, ``.scheduled_at`` and ``.retry_count`` say which one.
        Its completion commits with the turn's state; if it raises, the turn rolls back and
        the alarm is retried with backoff.
        """

    on_alarm.__objects_default__ = True  # type: ignore[attr-defined]  # see uses_alarms

    def client_view(self, conn: Connection) -> Any:
        """The JSON ``conn`` sees of the state; define it to sync a view per connection.

        Runs (a plain ``def``) when the client attaches and after every commit while it is
        attached; the client gets a patch whenever its view changed. Read ``self.state``,
        ``conn.auth`` and ``conn.state``; change nothing. Example::

            def client_view(self, conn):
                return {"todos": [t.model_dump() for t in self.state.todos
                                  if t.owner == conn.auth["user"]]}
        """
        return self.state.model_dump(mode="json")

    client_view.__objects_default__ = True  # type: ignore[attr-defined]  # see sync_mode

    @classmethod
    def migrate_state(cls, data: dict[str, Any], from_version: int) -> dict[str, Any]:
        """Upgrade a checkpoint written at ``from_version`` to ``state_version``.

        Called on thaw when the stored version is older. The default refuses, so that an
        unplanned version bump is a clear error instead of silently dropped data.
        """
        from .._exceptions import CorruptState

        raise CorruptState(
            f"{cls.__name__} stores state version {from_version} but the class is at "
            f"state_version={cls.state_version}; define {cls.__name__}.migrate_state"
        )

    # -- helpers for methods -----------------------------------------------------------------

    def record(self, kind: str, payload: Any = None) -> None:
        """Append a journal entry, committed together with this turn (dropped if it fails).

        ``TypeError`` on a memory object: it keeps no journal.
        """
        refuse_in_memory(self, "record()")
        self._activation.turn().record(kind, payload)

    def broadcast(
        self, event: str, payload: Any = None, *, exclude: Connection | None = None
    ) -> None:
        """Send ``event`` to every attached client, after this turn commits.

        Goes to the topic ``"{type}:{key}"``, so it reaches clients on every node.
        ``ValueError`` if ``event`` starts with ``objects:`` (reserved for protocol frames).
        """
        check_event(event)
        self._activation.broadcast(event, payload, exclude.id if exclude is not None else None)

    def connections(self, tag: str | None = None) -> list[Connection]:
        """Clients attached to this object on this node, optionally only those tagged ``tag``.

        Those that stayed attached while the object hibernated are listed again after the
        thaw, the same ``Connection`` objects with their ``state`` and ``tags``.
        """
        clients = self._activation.clients
        return clients.tagged(tag) if clients is not None else []

    @property
    def presence(self) -> Presence:
        """Who is attached: ``self.presence.list()`` is ``{key: {"metas": [...]}}``.

        Clients put themselves in it with ``conn.track(key, meta)`` (``on_connect`` is the
        usual place) and leave it when they detach. See ``Connection.track``.
        """
        return Presence(self._activation)

    def set_alarm(
        self,
        name: str = "default",
        *,
        at: datetime | None = None,
        delay: float | timedelta | None = None,
        every: float | timedelta | None = None,
        cron: str | None = None,
        payload: Any = None,
    ) -> Alarm:
        """Wake this object at ``at``, after ``delay``, ``every`` N seconds or on ``cron``.

        Recorded with the running turn (gone if it raises). Setting a name again replaces
        that alarm, so setting it in ``on_activate`` makes no duplicates. Example::

            self.set_alarm("reminder", delay=60, payload={"to": "ann"})
        """
        clock = self._alarm_clock()
        alarm = make_alarm(
            self, name, at=at, delay=delay, every=every, cron=cron, payload=payload
        )
        clock.write(AlarmWrite(name, alarm))
        return alarm

    def cancel_alarm(self, name: str = "default") -> None:
        """Delete the alarm ``name`` with this turn (nothing if there is none)."""
        clock = self._alarm_clock()
        clock.write(AlarmWrite(check_alarm_name(name), None))

    def delete(self) -> None:
        """Delete this object when the running turn ends: state, journal and alarms.

        The turn's caller gets its answer once the object is gone; the next call starts it
        fresh (``new state``).
        """
        self._activation.turn()  # only inside a turn
        self._activation.deleting = True

    def alarms(self) -> list[Alarm]:
        """This object's alarms, pending and failed, including this turn's changes."""
        return self._alarm_clock().listed()

    def _alarm_clock(self) -> AlarmClock:
        refuse_in_memory(self, "set_alarm(), cancel_alarm() and alarms()")
        clock = self._activation.alarms
        if clock is None:
            raise TypeError(f"{type(self).__name__} uses alarms but defines no on_alarm()")
        return clock


class EventSourced(DurableObject[S], Generic[S, E]):
    """An object whose state is rebuilt from its journal of events with a pure ``apply``.

    ``emit(event)`` applies the event to the state at once and journals it with the turn;
    on thaw the runtime loads the latest snapshot and replays the events after it. A snapshot
    is written every ``snapshot_every`` events and on hibernation.

    Example::

        class Deposited(BaseModel):
            amount: int

        class Account(EventSourced[Balance, Deposited]):
            @staticmethod
            def apply(state: Balance, event: Deposited) -> Balance:
                return Balance(total=state.total + event.amount)

            async def deposit(self, amount: int) -> int:
                self.emit(Deposited(amount=amount))
                return self.state.total
    """

    snapshot_every: ClassVar[int] = 100
    event_adapter: ClassVar[pydantic.TypeAdapter[Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        event = _type_arg(cls, EventSourced, 1)
        if event is not None:
            cls.event_adapter = pydantic.TypeAdapter(event)

    @staticmethod
    def apply(state: Any, event: Any) -> Any:
        """Return the state after ``event`` (pure: no I/O, no clock, no randomness)."""
        raise NotImplementedError("EventSourced objects must define a static apply(state, event)")

    def emit(self, event: E) -> None:
        """Apply ``event`` to the state now and journal it with this turn."""
        self.state = self.apply(self.state, event)
        self._activation.turn().record("event", self.event_adapter.dump_python(event, mode="json"))
