"""``Tracing``: OpenTelemetry spans of a node's work (the ``otel`` extra: opentelemetry-api).

- ``{type}.{method}``, a span per call (attributes ``objects.type``, ``objects.key``,
  ``objects.method``, ``objects.node``), a child of whatever span is current where the call
  is made (an incoming FastAPI request's, with OpenTelemetry's FastAPI instrumentation). On
  the owner a call was forwarded to, a second one (kind ``SERVER``) continues the trace;
- ``turn {type}.{name}``, a span per turn (a method, or a hook: ``on_connect``...), a child of
  its call; the object's own spans nest in it;
- ``thaw {type}``, a span per thaw (claim, load, ``on_activate``), a child of the call that
  woke the object;
- ``commit batch``, a span per group-commit transaction: a root span of its own (one batch
  carries turns of many traces), linked to the calls whose commits it carried (the SDK keeps
  128 links per span by default).

Trace context crosses nodes as headers of the global propagator (W3C ``traceparent`` and
``tracestate`` unless the app configured another): in a forwarded call's frame, and on the
upgrade of a relayed websocket. This module imports opentelemetry: ``observe.start_tracing``
imports it only when tracing is on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from .observe import Observer, outcome
from .turn import Stale

if TYPE_CHECKING:
    from .activation import Activation
    from .committer import PendingCommit
    from .methods import MethodSpec
    from .object import DurableObject

_CALL = otel_context.create_key("fastapi_objects.call")
"""The span of the call a turn runs for: what a commit batch links to."""
Token = tuple[Span, object]


def configured() -> bool:
    """Whether the app set a global tracer provider (else spans would go nowhere)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


class Tracing(Observer):
    """Spans of calls, turns, thaws and commit batches, and their context across nodes."""

    spans = True

    def __init__(self, provider: trace.TracerProvider | None, node_id: str) -> None:
        from .. import __version__

        provider = provider or trace.get_tracer_provider()
        self.tracer = provider.get_tracer("fastapi_objects", __version__)
        self.node_id = node_id

    def _start(
        self, name: str, type_name: str, key: str, kind: SpanKind = SpanKind.INTERNAL,
        **attributes: str,
    ) -> Span:
        return self.tracer.start_span(name, kind=kind, attributes={
            "objects.type": type_name, "objects.key": key, "objects.node": self.node_id,
            **attributes,
        })

    def call(
        self, cls: type[DurableObject[Any]], key: str, spec: MethodSpec, forwarded: bool
    ) -> Token:
        """Start the call's span and make it current."""
        span = self._start(f"{cls.type_name}.{spec.name}", cls.type_name, key,
                           SpanKind.SERVER if forwarded else SpanKind.INTERNAL,
                           **{"objects.method": spec.name})
        context = otel_context.set_value(_CALL, span, trace.set_span_in_context(span))
        return span, otel_context.attach(context)

    def call_end(
        self, token: Token, cls: type[DurableObject[Any]], spec: MethodSpec,
        error: BaseException | None,
    ) -> None:
        """End the call's span (with its error type, if it failed)."""
        _end(token, error)

    def turn(self, act: Activation, name: str) -> Token:
        """Start the turn's span and make it current."""
        span = self._start(f"turn {act.cls.type_name}.{name}", act.cls.type_name, act.key)
        return span, otel_context.attach(trace.set_span_in_context(span))

    def turn_end(self, token: Token, error: BaseException | None) -> None:
        """End the turn's span."""
        _end(token, error)

    def thaw(self, type_name: str, key: str) -> Token:
        """Start the thaw's span and make it current (``on_activate``'s turn nests in it)."""
        span = self._start(f"thaw {type_name}", type_name, key)
        return span, otel_context.attach(trace.set_span_in_context(span))

    def thaw_end(self, token: Token, type_name: str, error: BaseException | None) -> None:
        """End the thaw's span; a claim another node won is no error."""
        if isinstance(error, Stale):
            token[0].set_attribute("objects.claimed", False)
            error = None
        _end(token, error)

    def committing(self, pending: PendingCommit) -> None:
        """Remember the call (else the turn) whose commit joined ``pending``."""
        span = otel_context.get_value(_CALL) or trace.get_current_span()
        assert isinstance(span, Span)
        found = span.get_span_context()
        if found.is_valid:
            if pending.links is None:
                pending.links = [found]
            else:
                pending.links.append(found)

    def batch(self, batch: list[PendingCommit]) -> Token:
        """Start the batch's span, linked to its calls, and make it current."""
        links = [Link(found) for pending in batch for found in pending.links or ()]
        span = self.tracer.start_span(
            "commit batch", context=otel_context.Context(), links=links,
            attributes={"objects.node": self.node_id, "objects.batch_size": len(batch)},
        )
        return span, otel_context.attach(trace.set_span_in_context(span))

    def batch_end(self, token: Token, batch: list[PendingCommit], failed: int) -> None:
        """End the batch's span, saying how many of its commits failed."""
        token[0].set_attribute("objects.failed", failed)
        _end(token, None)

    # -- Propagation: trace context across nodes ---------------------------------------------

    def inject(self) -> dict[str, str] | None:
        """The current trace context as headers, or ``None`` when there is none."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier or None

    def attach(self, carrier: Mapping[str, str]) -> object:
        """Continue the trace ``carrier`` names (from another node)."""
        return otel_context.attach(propagate.extract(carrier))

    def detach(self, token: object) -> None:
        """Back to the context from before ``attach``."""
        otel_context.detach(token)  # type: ignore[arg-type]


def _end(token: Token, error: BaseException | None) -> None:
    span, attached = token
    otel_context.detach(attached)  # type: ignore[arg-type]
    if error is not None:
        kind = outcome(error)
        span.set_attribute("objects.outcome", kind)
        span.set_status(Status(StatusCode.ERROR, kind))
        if isinstance(error, Exception):
            span.record_exception(error)
    span.end()
