"""One live instance of an object: its turns, and how their effects become durable.

Turns run in the caller's own task (no task per object): a call takes the gate, runs the
method, hands the commit to the group committer and releases the gate *before* the commit
returns, so the next turn runs on the new state at once (pipelining). What is held back is the
output: the caller waits for its turn's commit, and a turn that changed nothing (or a read-only
call) waits for the latest commit whose state it could have seen.

An activation owns its parts: ``record`` (what its turns made, on its way to storage: a
variant per kind of object), ``idle`` (when to hibernate, and hibernating), ``alarms`` (its
alarm clock, for classes with ``on_alarm``), ``expiry`` (for classes with ``expire_after``)
``clients`` (attached connections, made on the first attach and dropped with the last) and
``sync`` (the clients' views of the state, for classes that sync it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .._exceptions import ConflictError, ObjectsError, Overloaded
from ..storage import Alarm, Checkpoint
from .alarms import AlarmClock, uses_alarms
from .clients import Clients
from .connection import CloseCode
from .expiry import Expiry
from .gate import Gate
from .idle import Idle
from .object import DurableObject, EventSourced
from .record import record_for
from .states import decode_state, new_state, replay
from .storable import check_result
from .sync import Sync
from .turn import ActivationHost, Stale, Turn

if TYPE_CHECKING:
    from .committer import PendingCommit
    from .methods import MethodSpec

# The activations whose turns are running in this call chain: a call that comes back to one
# of them runs inside the running turn instead of waiting for it (which would never happen).
_chain: ContextVar[tuple[Activation, ...]] = ContextVar("objects_call_chain", default=())
_NO_OP_HOOKS = {DurableObject.on_activate, DurableObject.on_hibernate}


class Activation:
    """The live instance of ``(type, key)`` on this node."""

    __slots__ = (
        "_turn", "alarms", "clients", "closed", "cls", "deleting", "event_sourced", "expiry",
        "gate", "host", "idle", "in_flight", "instance", "key", "loop", "record", "sync",
        "topic",
    )

    def __init__(self, host: ActivationHost, cls: type[DurableObject[Any]], key: str) -> None:
        self.host = host
        self.loop = host.loop
        self.cls = cls
        self.key = key
        self.topic = f"{cls.type_name}:{key}"
        self.event_sourced = issubclass(cls, EventSourced)
        self.closed = False
        self.deleting = False
        self.in_flight = 0
        self.gate = Gate(held=True)  # the loader holds the gate until thawed
        self._turn: Turn | None = None
        self.instance: DurableObject[Any]
        self.record = record_for(self)
        self.idle = Idle(self)
        self.alarms = AlarmClock(self) if uses_alarms(cls) else None
        self.expiry = Expiry(self) if cls.expire_after is not None else None
        self.clients: Clients | None = None
        mode = cls.__objects_sync__
        self.sync = Sync(self, mode) if mode is not None else None

    # -- thaw --------------------------------------------------------------------------------

    async def load(self, cp: Checkpoint | None, alarms: list[Alarm] | None = None) -> None:
        """Thaw from checkpoint ``cp`` (migration, journal replay), then run ``on_activate``."""
        cls, record = self.cls, self.record
        instance = cls()
        instance.key = self.key
        instance.objects = self.host.public
        instance._activation = self
        if cp is None or cls.persistence == "memory":  # (memory: nothing stored is read)
            instance.state = new_state(cls, self.topic)
        else:
            record.rev, record.journal_rev = cp.rev, cp.journal_rev
            record.snapshot_rev = cp.snapshot_rev
            instance.state = decode_state(cls, self.topic, cp.state, cp.state_version)
            if self.event_sourced and cp.journal_rev > cp.snapshot_rev:
                assert issubclass(cls, EventSourced)
                instance.state, record.since_snapshot = await replay(
                    self.host.storage, cls, self.key, instance.state, after_rev=cp.snapshot_rev
                )
        self.instance = instance
        self.host.sleepers.rejoin(self)  # clients that slept through its hibernation
        if self.expiry is not None:
            self.expiry.load(cp, alarms)
        if self.alarms is not None:  # before on_activate, which may set or cancel alarms
            await self.alarms.load(alarms)
        await self.run_hook(instance.on_activate)
        self.host.counters.thaws += 1
        self.idle.start()

    # -- the gate ----------------------------------------------------------------------------

    async def enter(self, readonly: bool) -> None:
        """Take the gate (``Stale`` when this instance closed meanwhile)."""
        if self.closed:
            raise Stale
        if not self.gate.try_enter(readonly):
            await self._wait(readonly)

    async def _wait(self, readonly: bool) -> None:
        """Queue for the gate (``Overloaded`` past ``max_queue``; ``Stale`` if it closed)."""
        gate = self.gate
        if gate.queued >= self.cls.max_queue:
            raise Overloaded(
                f"{self.topic}: {gate.queued} calls are already waiting "
                f"(max_queue={self.cls.max_queue})",
                retry_after=1.0,
            )
        await gate.wait(self.loop, readonly)
        if self.closed:
            gate.leave(readonly)
            raise Stale

    def busy(self) -> bool:
        """Whether a call, a waiter or an attached client keeps this object awake."""
        clients = self.clients
        return bool(
            self.in_flight or self.gate.busy or (clients is not None and clients.keep_awake())
        )

    # -- turns -------------------------------------------------------------------------------

    def turn(self) -> Turn:
        """The running turn; ``record``/``emit``/``broadcast`` need one."""
        if self._turn is None:
            raise RuntimeError(f"{self.topic}: record(), emit() and broadcast() run inside a turn")
        return self._turn

    def running_turn(self) -> Turn | None:
        """The mutating turn running now, if any."""
        return self._turn

    def call(
        self, spec: MethodSpec, args: dict[str, Any], held: bool = False
    ) -> Awaitable[Any]:
        """Run one call as a turn (or inside the running turn, when re-entered)."""
        return self.run(spec.fn, args, spec.readonly, held, spec, spec.name)

    async def run(
        self,
        fn: Callable[..., Awaitable[Any]],
        kwargs: dict[str, Any],
        readonly: bool = False,
        held: bool = False,
        spec: MethodSpec | None = None,
        name: str = "turn",
    ) -> Any:
        """Run ``fn(instance, **kwargs)`` as a turn; return once its output may leave.

        ``held``: the caller already holds the gate as writer (it thawed the object), so the
        call that caused the thaw keeps its place ahead of the calls that queued meanwhile; a
        read-only one still runs without a turn (nothing to encode or commit), then gives
        the writer's place back.
        ``spec``: the method called, whose result must be storable JSON like the state.
        ``name``: what the turn runs (the method, or a hook), for its observer.
        """
        chain = _chain.get()
        if self in chain:
            return await fn(self.instance, **kwargs)
        if not held:
            if self.closed:
                raise Stale
            if not self.gate.try_enter(readonly):
                await self._wait(readonly)
        token = _chain.set((*chain, self))
        self.in_flight += 1  # until the output may leave: a caller awaiting its commit counts
        try:
            try:
                if readonly:
                    observer = self.host.spans
                    observed = None if observer is None else observer.turn(self, name)
                    try:
                        result = await fn(self.instance, **kwargs)
                        if spec is not None:
                            check_result(spec, result, self.topic)
                    except BaseException as exc:
                        if observer is not None:
                            observer.turn_end(observed, exc)
                        raise
                    finally:
                        self.gate.leave(not held)  # held: the writer's place, given back
                    if observer is not None:
                        observer.turn_end(observed, None)
                    pending = self.record.last
                else:
                    try:
                        result, pending = await self._turn_of(
                            fn(self.instance, **kwargs), spec, name
                        )
                        if self.deleting:  # self.delete() in the turn: gone before it answers
                            await self.destroy()
                            pending = None
                    finally:
                        self.gate.leave(False)
            finally:
                _chain.reset(token)
                self.idle.last_used = self.loop.time()
            if pending is not None and not (pending.done and pending.error is None):
                await pending.wait()
        finally:
            self.in_flight -= 1
        return result

    async def _turn_of(
        self, coro: Any, spec: MethodSpec | None = None, name: str = "turn"
    ) -> tuple[Any, PendingCommit | None]:
        """Run a mutating turn; roll its state back and publish nothing if it raises."""
        instance = self.instance
        saved = instance.state
        record = self.record
        if not record.state_text and not self.event_sourced:
            record.state_text = record.encode_state()  # the state to roll back to, made lazily
        turn = self._turn = Turn()
        observer = self.host.spans
        observed = None if observer is None else observer.turn(self, name)
        try:
            result = await coro
            if spec is not None:
                check_result(spec, result, self.topic)
            pending = self.record.finish(turn) or self.record.last
        except BaseException as exc:
            if self.event_sourced:
                instance.state = saved  # apply() is pure: the old state object is intact
            else:
                instance.state = self.cls.state_model.model_validate_json(record.state_text)
            if observer is not None:
                observer.turn_end(observed, exc)
            raise
        finally:
            self._turn = None
        if self.sync is not None and self.clients is not None:
            self.sync.turn_ended()  # the views it changed, sent after its commit
        if observer is not None:
            observer.turn_end(observed, None)
        self.host.counters.turns += 1
        return result, pending

    async def run_hook(self, hook: Any, snapshot: bool = False) -> PendingCommit | None:
        """Run a lifecycle hook as a turn (the caller holds the gate).

        A hook the class does not override does nothing: no turn for it (a thaw storm runs
        thousands of ``on_activate`` at once).
        """
        record = self.record
        if getattr(hook, "__func__", None) in _NO_OP_HOOKS:
            pending = record.last
        else:
            _, pending = await self._turn_of(hook(), name=hook.__name__)
        if snapshot and self.event_sourced and record.since_snapshot:
            pending = record.commit(Turn(), [], record.encode_state(), True)
        return pending

    def broadcast(self, event: str, payload: Any, exclude: str | None) -> None:
        """Publish ``event`` to the object's topic after the running turn commits."""
        host, topic = self.host, self.topic
        self.turn().then(lambda: host.publish_nowait(topic, event, payload, exclude=exclude))

    # -- deletion and leaving memory -----------------------------------------------------------

    async def destroy(self) -> None:
        """Delete this object for good (the caller holds the gate): state, journal, alarms.

        Waits for the commits in flight, then deletes fenced by this instance's ownership
        epoch and leaves memory; the next call starts the object fresh.
        """
        record = self.record
        if record.last is not None:
            await record.last.wait()
        assert record.epoch is not None
        if not await self.host.storage.destroy(
            self.cls.type_name, self.key, self.host.node_id, record.epoch
        ):
            self.invalidate(ConflictError(f"{self.topic}: lost ownership before the delete"))
            raise ConflictError(f"{self.topic} was not deleted: another node owns it now")
        self.close()

    async def destroy_held(self, held: bool) -> None:
        """``objects.delete``: take the gate (unless ``held``) and destroy."""
        if not held:
            await self.enter(False)
        try:
            await self.destroy()
        finally:
            self.gate.leave(False)

    def invalidate(self, error: ObjectsError) -> None:
        """Drop this instance: fail turns that built on unconfirmed state, forget it."""
        self.record.discard_queued(error)
        self.close()

    def close(self, sleep: bool = False) -> None:
        """Leave memory: queued callers retry on a fresh activation.

        ``sleep`` (a hibernation): the attached clients wait for the next thaw
        (``sleepers.py``); else they are closed 1012, to reconnect.
        """
        if self.closed:
            return
        self.closed = True
        self.idle.stop()
        if self.alarms is not None:
            self.alarms.stop()
        self.host.forget(self)
        clients, self.clients = self.clients, None
        if sleep and clients is not None:
            self.host.sleepers.keep(self, clients.connections.values())
            clients = None
        for conn in list(clients.connections.values()) if clients is not None else ():
            # Their instance is gone: make them reconnect to a fresh one. Soon, not now: calls
            # failing with this close (a fenced-out commit) first get to send their errors.
            conn.activation = None
            self.loop.call_soon(
                conn.close, CloseCode.RELOADED, f"{self.topic} was reloaded; reconnect"
            )
        self.gate.fail_waiters(Stale)

    def attached(self) -> Clients:
        """The clients part, made on the first attach."""
        if self.clients is None:
            self.clients = Clients(self)
        return self.clients
