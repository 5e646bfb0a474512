"""One live instance of an object: its turn gate, turns, thaw and hibernation.

Turns run in the caller's own task (no task per object): a call takes the gate, runs the
method, hands the commit to the group committer and releases the gate *before* the commit
returns, so the next turn runs on the new state at once (pipelining). What is held back is the
output: the caller waits for its turn's commit, and a turn that changed nothing (or a read-only
call) waits for the latest commit whose state it could have seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .._exceptions import (
    Overloaded,
)
from ..storage import Alarm, Checkpoint, Commit
from .committer import merge_alarms
from .gate import Gate
from .object import DurableObject, EventSourced
from .outcomes import Outcomes
from .storable import check_result, storable_json
from .thaw import decode_state, new_state, replay
from .turn import ActivationHost, Stale, Turn

if TYPE_CHECKING:

    from .committer import PendingCommit
    from .connection import Connection
    from .methods import MethodSpec

log = logging.getLogger("fastapi_objects")

# The activations whose turns are running in this call chain: a call that comes back to one
# of them runs inside the running turn instead of waiting for it (which would never happen).
_chain: ContextVar[tuple[Activation, ...]] = ContextVar("objects_call_chain", default=())
_NO_OP_HOOKS = {DurableObject.on_activate, DurableObject.on_hibernate}


class Activation(Outcomes):
    """The live instance of ``(type, key)`` on this node."""

    __slots__ = (
        "_turn",
        "closed",
        "cls",
        "deleting",
        "epoch",
        "event_sourced",
        "gate",
        "host",
        "in_flight",
        "instance",
        "journal_rev",
        "key",
        "loop",
        "rev",
        "since_snapshot",
        "snapshot_rev",
        "state_text",
        "topic",
    )

    def __init__(self, host: ActivationHost, cls: type[DurableObject[Any]], key: str) -> None:
        self.host = host
        self.cls = cls
        self.key = key
        self.topic = f"{cls.type_name}:{key}"
        self.event_sourced = issubclass(cls, EventSourced)
        self.rev = self.journal_rev = self.snapshot_rev = self.since_snapshot = 0
        self.epoch: int | None = None  # the ownership epoch this instance commits under
        self.state_text = b""  # the last good state as stored (JSON), for rollback
        self.queued: PendingCommit | None = None  # merged turns not yet taken by the writer
        self.last: PendingCommit | None = None  # latest commit not yet durable (output gate)
        self.closed = False
        self.in_flight = 0
        self.connections: dict[str, Connection] | None = None
        self.gate = Gate(held=True)  # the loader holds the gate until thawed
        self._turn: Turn | None = None
        self._alarm_timer = None
        self.alarm_state = None
        self.deleting = False
        self._timer: asyncio.TimerHandle | None = None
        self.loop = host.loop
        self.last_used = self.loop.time()

    # -- thaw --------------------------------------------------------------------------------

    async def load(self, cp: Checkpoint | None, alarms: list[Alarm] | None = None) -> None:
        """Thaw from checkpoint ``cp`` (migration, journal replay), then run ``on_activate``."""
        cls = self.cls
        storage = self.host.storage
        instance = cls()
        instance.key = self.key
        instance.objects = self.host.public
        instance._activation = self
        if cp is None:
            instance.state = new_state(cls, self.topic)
        else:
            self.rev, self.journal_rev, self.snapshot_rev = cp.rev, cp.journal_rev, cp.snapshot_rev
            instance.state = decode_state(cls, self.topic, cp.state, cp.state_version)
            if self.event_sourced and cp.journal_rev > cp.snapshot_rev:
                assert issubclass(cls, EventSourced)
                instance.state, self.since_snapshot = await replay(
                    storage, cls, self.key, instance.state, after_rev=self.snapshot_rev
                )
            if cp.status != "active":
                self.host.committer.set_status(cls.type_name, self.key, "active")
        self.instance = instance
        await self.load_alarms(alarms)  # before on_activate, which may set or cancel alarms
        if not self.event_sourced:
            self.state_text = self._encode_state()
        await self._run_hook(instance.on_activate)
        self.host.counters.thaws += 1
        self._arm(cls.idle_timeout)

    # -- the gate ----------------------------------------------------------------------------

    async def _enter(self, readonly: bool) -> None:
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

    # -- turns -------------------------------------------------------------------------------

    def turn(self) -> Turn:
        """The running turn; ``record``/``emit``/``broadcast`` need one."""
        if self._turn is None:
            raise RuntimeError(f"{self.topic}: record(), emit() and broadcast() run inside a turn")
        return self._turn

    def in_turn(self) -> bool:
        """Whether a mutating turn of this object is running."""
        return self._turn is not None

    def call(
        self, spec: MethodSpec, args: dict[str, Any], held: bool = False
    ) -> Awaitable[Any]:
        """Run one call as a turn (or inside the running turn, when re-entered)."""
        return self.run(spec.fn, args, spec.readonly, held, spec)

    async def run(
        self,
        fn: Callable[..., Awaitable[Any]],
        kwargs: dict[str, Any],
        readonly: bool = False,
        held: bool = False,
        spec: MethodSpec | None = None,
    ) -> Any:
        """Run ``fn(instance, **kwargs)`` as a turn; return once its output may leave.

        ``held``: the caller already holds the gate as writer (it thawed the object), so the
        call that caused the thaw keeps its place ahead of the calls that queued meanwhile.
        ``spec``: the method called, whose result must be storable JSON like the state.
        """
        chain = _chain.get()
        if self in chain:
            return await fn(self.instance, **kwargs)
        if held:
            readonly = False
        elif self.closed:
            raise Stale
        elif not self.gate.try_enter(readonly):
            await self._wait(readonly)
        token = _chain.set((*chain, self))
        self.in_flight += 1  # until the output may leave: a caller awaiting its commit counts
        try:
            try:
                if readonly:
                    try:
                        result = await fn(self.instance, **kwargs)
                        if spec is not None:
                            check_result(spec, result, self.topic)
                    finally:
                        self.gate.leave(True)
                    pending = self.last
                else:
                    try:
                        result, pending = await self._turn_of(fn(self.instance, **kwargs), spec)
                        if self.deleting:  # self.delete() in the turn: gone before it answers
                            await self.destroy()
                            pending = None
                    finally:
                        self.gate.leave(False)
            finally:
                _chain.reset(token)
                self.last_used = self.loop.time()
            if pending is not None and not (pending.done and pending.error is None):
                await pending.wait()
        finally:
            self.in_flight -= 1
        return result

    async def _turn_of(
        self, coro: Any, spec: MethodSpec | None = None
    ) -> tuple[Any, PendingCommit | None]:
        """Run a mutating turn; roll its state back and publish nothing if it raises."""
        turn = self._turn = Turn()
        instance = self.instance
        saved = instance.state
        try:
            result = await coro
            if spec is not None:
                check_result(spec, result, self.topic)
            pending = self._finish(turn) or self.last
        except BaseException:
            if self.event_sourced:
                instance.state = saved  # apply() is pure: the old state object is intact
            else:
                instance.state = self.cls.state_model.model_validate_json(self.state_text)
            raise
        finally:
            self._turn = None
        self.host.counters.turns += 1
        return result, pending

    async def _run_hook(self, hook: Any, snapshot: bool = False) -> PendingCommit | None:
        """Run a lifecycle hook as a turn (the caller holds the gate).

        A hook the class does not override does nothing: no turn for it (a thaw storm runs
        thousands of ``on_activate`` at once).
        """
        if getattr(hook, "__func__", None) in _NO_OP_HOOKS:
            pending = self.last
        else:
            _, pending = await self._turn_of(hook())
        if snapshot and self.event_sourced and self.since_snapshot:
            pending = self._commit(Turn(), [], self._encode_state(), True)
        return pending

    def _encode_state(self) -> bytes:
        """The state as stored: its JSON, checked to read back (``UnstorableValue``)."""
        return storable_json(
            self.instance.state.model_dump(mode="json"), f"{self.topic}: the new state"
        )

    def _finish(self, turn: Turn) -> PendingCommit | None:
        """Hand a finished turn to the committer; ``None`` when it changed nothing.

        The state and journal entries are encoded to JSON once, here: the same bytes tell
        whether the state changed, are checked to read back (``UnstorableValue`` rolls the
        turn back), and go to storage.
        """
        topic = self.topic
        entries = [
            (kind, storable_json(payload, f"{topic}: journal entry {kind!r}"))
            for kind, payload in turn.entries
        ]
        if self.event_sourced:
            if not entries and not turn.alarms:
                return None
            self.since_snapshot += sum(1 for kind, _ in entries if kind == "event")
            snapshot = self.rev == 0 or self.since_snapshot >= self.cls.snapshot_every  # type: ignore[attr-defined]
            return self._commit(turn, entries, self._encode_state() if snapshot else None,
                                snapshot)
        state: bytes | None = self._encode_state()
        if state == self.state_text:
            if not entries and not turn.alarms:
                if turn.after:  # broadcasts of a turn that wrote nothing: after earlier commits
                    if self.last is not None:
                        self.last.after.extend(turn.after)
                    else:
                        for action in turn.after:
                            action()
                return None
            if self.rev:
                state = None  # journal only; a first commit must create the row with its state
        if state is not None:
            self.state_text = state
        return self._commit(turn, entries, state, True)

    def _commit(
        self, turn: Turn, entries: list[tuple[str, bytes]], state: bytes | None, snapshot: bool
    ) -> PendingCommit:
        new_rev = self.rev + 1
        journal_rev = self.journal_rev + len(entries)
        if snapshot:
            self.snapshot_rev = journal_rev
            self.since_snapshot = 0
        commit = Commit(
            type=self.cls.type_name, key=self.key, expected_rev=self.rev, new_rev=new_rev,
            state=state, state_version=self.cls.state_version if state is not None else None,
            snapshot_rev=self.snapshot_rev, journal_rev=journal_rev, entries=entries,
            epoch=self.epoch, alarms=merge_alarms([], turn.alarms) if turn.alarms else [],
        )
        self.rev, self.journal_rev = new_rev, journal_rev
        pending = self.host.committer.submit(self, commit)
        if commit.alarms:
            self.alarms_committing(commit.alarms)
        if turn.after:
            pending.after.extend(turn.after)
        self.last = pending
        return pending

    def close(self) -> None:
        """Leave memory: queued callers retry on a fresh activation."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._alarm_timer is not None:
            self._alarm_timer.cancel()
            self._alarm_timer = None
        self.host.forget(self)
        for conn in list(self.connections.values()) if self.connections else ():
            # Their instance is gone: make them reconnect to a fresh one. Soon, not now: calls
            # failing with this close (a fenced-out commit) first get to send their errors.
            conn.activation = None
            self.loop.call_soon(conn.close, 1012, f"{self.topic} was reloaded; reconnect")
        self.connections = None
        self.gate.fail_waiters(Stale)
