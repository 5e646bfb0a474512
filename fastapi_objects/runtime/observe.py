"""``Observer``: what a node tells about its work, for metrics and traces — the one seam.

A runtime holds at most one observer (``Observers`` combines several) and gives it to the
parts that report: ``Calls`` (each call), ``Activation`` (each turn), ``Host`` (each thaw),
the group committer (each batch, and each turn's commit joining it), ``Idle`` (each
hibernation) and ``AlarmClock`` (each alarm's lag). Without one, each of them checks
``is None`` and does nothing else, and the call path does not even do that
(``Calls.invoke`` checks it twice).

A hook that lasts (call, turn, thaw, batch) returns a token that its ``*_end`` gets back, in
the same task, so an observer may make its span the current one in between. The base class
ignores everything: an observer overrides what it uses. ``Metrics`` (``metrics.py``) counts;
``Tracing`` (``tracing.py``, the ``otel`` extra) makes spans and is also the ``Propagation``
that carries trace context to other nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .._exceptions import MissingDependency, ObjectsError

if TYPE_CHECKING:
    from .activation import Activation
    from .committer import PendingCommit
    from .host import Host
    from .methods import MethodSpec
    from .object import DurableObject
    from .prometheus import ObjectsCollector
    from .tracing import Tracing


class Observer:
    """Hooks called as a node works; each does nothing here."""

    spans = False
    """Whether it is told of turns and of commits joining a batch (the hooks every turn
    pays for); an observer that makes no spans has no use for them."""

    def call(
        self, cls: type[DurableObject[Any]], key: str, spec: MethodSpec, forwarded: bool
    ) -> Any:
        """A call starts (``forwarded``: another node sent it here). Returns a token."""

    def call_end(
        self, token: Any, cls: type[DurableObject[Any]], spec: MethodSpec,
        error: BaseException | None,
    ) -> None:
        """The call answered (``error`` is ``None``) or raised ``error``."""

    def turn(self, act: Activation, name: str) -> Any:
        """A turn of ``act`` starts: method ``name`` or a hook. Returns a token."""

    def turn_end(self, token: Any, error: BaseException | None) -> None:
        """The turn finished (its commit may still be on its way)."""

    def thaw(self, type_name: str, key: str) -> Any:
        """This node starts claiming and loading an object. Returns a token."""

    def thaw_end(self, token: Any, type_name: str, error: BaseException | None) -> None:
        """The object is live here, or not (``Stale``: another node owns it)."""

    def committing(self, pending: PendingCommit) -> None:
        """The running turn's commit joined ``pending`` (called inside the turn)."""

    def batch(self, batch: list[PendingCommit]) -> Any:
        """The committer starts writing ``batch`` in one transaction. Returns a token."""

    def batch_end(self, token: Any, batch: list[PendingCommit], failed: int) -> None:
        """The batch is written; ``failed`` of its commits were fenced out or lost."""

    def hibernated(self, type_name: str) -> None:
        """An object left memory."""

    def alarm(self, type_name: str, lag: float) -> None:
        """An alarm fires ``lag`` seconds after it was due."""


class Observers(Observer):
    """Several observers as one: each hook goes to every one, ends in reverse order."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = observers
        self._reversed = observers[::-1]
        self.spans = any(o.spans for o in observers)

    def call(
        self, cls: type[DurableObject[Any]], key: str, spec: MethodSpec, forwarded: bool
    ) -> Any:
        """Start the call in every observer."""
        return [o.call(cls, key, spec, forwarded) for o in self.observers]

    def call_end(
        self, token: Any, cls: type[DurableObject[Any]], spec: MethodSpec,
        error: BaseException | None,
    ) -> None:
        """End the call in every observer."""
        for o, t in zip(self._reversed, token[::-1], strict=True):
            o.call_end(t, cls, spec, error)

    def turn(self, act: Activation, name: str) -> Any:
        """Start the turn in every observer."""
        return [o.turn(act, name) for o in self.observers]

    def turn_end(self, token: Any, error: BaseException | None) -> None:
        """End the turn in every observer."""
        for o, t in zip(self._reversed, token[::-1], strict=True):
            o.turn_end(t, error)

    def thaw(self, type_name: str, key: str) -> Any:
        """Start the thaw in every observer."""
        return [o.thaw(type_name, key) for o in self.observers]

    def thaw_end(self, token: Any, type_name: str, error: BaseException | None) -> None:
        """End the thaw in every observer."""
        for o, t in zip(self._reversed, token[::-1], strict=True):
            o.thaw_end(t, type_name, error)

    def committing(self, pending: PendingCommit) -> None:
        """Tell every observer."""
        for o in self.observers:
            o.committing(pending)

    def batch(self, batch: list[PendingCommit]) -> Any:
        """Start the batch in every observer."""
        return [o.batch(batch) for o in self.observers]

    def batch_end(self, token: Any, batch: list[PendingCommit], failed: int) -> None:
        """End the batch in every observer."""
        for o, t in zip(self._reversed, token[::-1], strict=True):
            o.batch_end(t, batch, failed)

    def hibernated(self, type_name: str) -> None:
        """Tell every observer."""
        for o in self.observers:
            o.hibernated(type_name)

    def alarm(self, type_name: str, lag: float) -> None:
        """Tell every observer."""
        for o in self.observers:
            o.alarm(type_name, lag)


class Propagation(Protocol):
    """Trace context across nodes: what a forwarded call or a relayed client carries."""

    def inject(self) -> dict[str, str] | None:
        """The current trace context as headers (W3C ``traceparent``...), if there is one."""

    def attach(self, carrier: Mapping[str, str]) -> object:
        """Make the context ``carrier`` names the current one; a token for ``detach``."""

    def detach(self, token: object) -> None:
        """Restore the context from before ``attach``."""


def outcome(error: BaseException) -> str:
    """What a failed call's outcome is called: its error type, as clients see it."""
    if isinstance(error, ObjectsError):
        return error.type
    if isinstance(error, Exception):
        return "internal_error"  # the object's own code raised (clients see this type too)
    return "cancelled"  # the caller went away (an overrun call_timeout is "timeout")


def combine(observers: list[Observer]) -> Observer:
    """The one observer a runtime holds for ``observers`` (at least one)."""
    return observers[0] if len(observers) == 1 else Observers(*observers)


def start_tracing(enabled: bool | None, provider: Any, node_id: str) -> Tracing | None:
    """The tracing observer, when traces are on; imports opentelemetry only then.

    On when ``enabled`` (the ``tracing`` setting) is true or a ``provider`` is given, which
    need the ``otel`` extra (``MissingDependency`` without it); when ``enabled`` is ``None``,
    whenever opentelemetry is installed and the app configured a global tracer provider.
    """
    if enabled is False:
        return None
    explicit = enabled is True or provider is not None
    try:
        from .tracing import Tracing, configured
    except ImportError:
        if explicit:
            raise MissingDependency(
                "traces need opentelemetry-api: pip install 'fastapi-objects[otel]'"
            ) from None
        return None
    if not explicit and not configured():
        return None
    return Tracing(provider, node_id)


def new_collector(host: Host) -> ObjectsCollector:
    """A Prometheus collector of ``host``'s families, counting from now on.

    ``MissingDependency`` without the ``prometheus`` extra.
    """
    try:
        from .prometheus import ObjectsCollector
    except ImportError:
        raise MissingDependency(
            "metrics need prometheus-client: pip install 'fastapi-objects[prometheus]'"
        ) from None
    from .metrics import Metrics

    metrics = Metrics()
    host.observe(metrics)
    return ObjectsCollector(host, metrics)
