"""What every part of an activation shares: its turn record, its host, and ``Stale``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from datetime import datetime

    from ..storage import AlarmWrite, Storage
    from .activation import Activation
    from .committer import GroupCommitter
    from .observe import Observer
    from .sleepers import Sleepers
    from .stats import Counters
    from .timers import Wheel


class Stale(Exception):
    """This activation was closed (hibernated, fenced out); retry on a fresh one."""


class Turn:
    """What a running turn produced besides state: journal entries and post-commit actions.

    Most turns produce neither: the lists are made on the first ``record``/``then``/``alarm``.
    """

    __slots__ = ("after", "alarms", "entries")

    def __init__(self) -> None:
        self.entries: list[tuple[str, Any]] | tuple[()] = ()
        self.after: list[Any] | tuple[()] = ()
        self.alarms: list[AlarmWrite] | tuple[()] = ()

    def record(self, kind: str, payload: Any) -> None:
        """A journal entry, committed with the turn."""
        if not self.entries:
            self.entries = []
        self.entries.append((kind, payload))

    def then(self, action: Any) -> None:
        """An action to run once the turn's commit is durable (a broadcast, a send)."""
        if not self.after:
            self.after = []
        self.after.append(action)

    def alarm(self, write: AlarmWrite) -> None:
        """An alarm set, moved or cancelled by the turn, written with its commit."""
        if not self.alarms:
            self.alarms = []
        self.alarms.append(write)


class ActivationHost(Protocol):
    """What an activation needs from its node (``Host`` provides it): nothing more."""

    storage: Storage
    node_id: str
    committer: GroupCommitter
    counters: Counters
    timers: Wheel  # coarse timers: call deadlines, idle checks
    observer: Observer | None  # metrics, traces (``observe.py``)
    spans: Observer | None  # the observer, when it is told of every turn (traces)
    public: Any  # what objects see as ``self.objects`` (the Runtime)
    clock: Callable[[], datetime]  # wall time (UTC) for expiries; tests give another
    sleepers: Sleepers  # clients of hibernated objects, until they thaw

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The node's event loop."""

    def forget(self, act: Activation) -> None:
        """Remove a closed activation from the registry."""

    def leave(self, act: Activation, leaving: bool) -> None:
        """Count ``act`` as on its way out of memory to make room (or no longer)."""

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a background task owned by the node."""

    def publish_nowait(
        self, topic: str, event: str, payload: Any, *, exclude: str | None = None
    ) -> None:
        """Publish a broadcast (after the turn committed)."""
