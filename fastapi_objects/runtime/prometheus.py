"""A node's Prometheus families (the ``prometheus`` extra): what ``Runtime.metrics()`` returns.

Labels are ``type``, ``method``, ``outcome`` and ``queue``, never an object's key:

- ``objects_calls_total{type,method,outcome}``: calls made on this node (``outcome`` is ``ok``
  or the error type clients see: ``conflict``, ``timeout``, ``internal_error``...), counted
  once, where the caller waited, wherever they ran;
- ``objects_call_duration_seconds{type,method}``: how long those callers waited;
- ``objects_commit_batch_size``, ``objects_commit_duration_seconds``: the group committer's
  transactions that carried object commits, and their object commits each;
- ``objects_active{type}``, ``objects_connections{type}``: live objects and attached clients;
- ``objects_thaws_total{type}``, ``objects_hibernations_total{type}``;
- ``objects_forwarded_total``, ``objects_takeovers_total``, ``objects_conflicts_total``: as in
  ``Runtime.stats()``;
- ``objects_alarm_lag_seconds``: from an alarm's due time to its turn starting;
- ``objects_queue_jobs{queue,state}``: jobs ``ready``, ``claimed`` and ``dead`` of the queues
  this node holds (so each queue is reported once in the cluster), as of the last ``refresh``;
- ``objects_node_lease_seconds_left``: how long this node may serve without a heartbeat.

The counts come from the ``Metrics`` observer; the rest is read from the node when scraped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .._exceptions import ObjectsError
from .methods import method_spec
from .queues import QUEUE_TYPE, ObjectsQueue
from .turn import Stale

if TYPE_CHECKING:
    from .host import Host
    from .metrics import Histogram, Metrics

QUEUE_STATES = ("ready", "claimed", "dead")


class ObjectsCollector(Collector):
    """The families of one node, for a ``prometheus_client`` registry.

    Example::

        from prometheus_client import CollectorRegistry
        registry = CollectorRegistry()
        collector = objects.runtime.metrics()
        registry.register(collector)
        await collector.refresh()     # the queues' job counts (metrics_router() does it)
    """

    def __init__(self, host: Host, metrics: Metrics) -> None:
        self._host = host
        self._metrics = metrics
        self._queues: dict[str, dict[str, int]] = {}

    async def refresh(self) -> None:
        """Read the job counts of the queues this node holds, through their ``stats()``.

        A read-only turn on each queue's instance here, not a call: the scrape's reads are not
        counted (nor traced) as calls anyone made.
        """
        spec = method_spec(ObjectsQueue, "stats")
        queues: dict[str, dict[str, int]] = {}
        for (type_name, name), act in list(self._host.activations.items()):
            if type_name == QUEUE_TYPE:
                try:
                    queues[name] = await act.call(spec, {})
                except (ObjectsError, Stale):
                    continue  # it moved or is reloading: its new owner reports it
        self._queues = queues

    def collect(self) -> Iterable[Metric]:
        """Every family, read now (from any thread)."""
        metrics, host = self._metrics, self._host
        calls = CounterMetricFamily(
            "objects_calls", "Calls made on this node, by outcome (ok or the error type).",
            labels=["type", "method", "outcome"],
        )
        durations = HistogramMetricFamily(
            "objects_call_duration_seconds", "How long callers on this node waited for calls.",
            labels=["type", "method"],
        )
        for stats in list(metrics.calls.values()):
            labels = [stats.type_name, stats.method]
            errors = dict(stats.errors)
            duration = stats.duration()
            calls.add_metric([*labels, "ok"], duration.count - sum(errors.values()))
            for kind, n in sorted(errors.items()):
                calls.add_metric([*labels, kind], n)
            durations.add_metric(labels, _buckets(duration.bounds, duration.counts),
                                 duration.sum)
        yield calls
        yield durations
        yield _histogram("objects_commit_batch_size",
                         "Object commits per group-commit transaction.", metrics.batch_size)
        yield _histogram("objects_commit_duration_seconds",
                         "How long each group-commit transaction took.", metrics.commit_seconds)
        types = sorted(host.types)
        active = dict.fromkeys(types, 0)
        connections = dict.fromkeys(types, 0)
        for (type_name, _), act in list(host.activations.items()):
            active[type_name] = active.get(type_name, 0) + 1
            clients = act.clients
            if clients is not None:
                connections[type_name] = connections.get(type_name, 0) + len(clients.connections)
        yield _by_type(GaugeMetricFamily, "objects_active", "Objects live on this node.", active)
        yield _by_type(GaugeMetricFamily, "objects_connections",
                       "Websocket clients attached to objects on this node.", connections)
        yield _by_type(CounterMetricFamily, "objects_thaws", "Objects thawed on this node.",
                       {**dict.fromkeys(types, 0), **metrics.thaws})
        yield _by_type(CounterMetricFamily, "objects_hibernations",
                       "Objects that hibernated on this node.",
                       {**dict.fromkeys(types, 0), **metrics.hibernations})
        totals = host.stats()
        yield CounterMetricFamily("objects_forwarded", "Calls this node sent to another owner.",
                                  totals.forwarded)
        yield CounterMetricFamily("objects_takeovers",
                                  "Objects claimed here from a node that died owning them.",
                                  totals.takeovers)
        yield CounterMetricFamily("objects_conflicts",
                                  "Commits fenced out (another writer changed the object).",
                                  totals.conflicts)
        yield _histogram("objects_alarm_lag_seconds",
                         "From an alarm's due time to its turn starting.", metrics.alarm_lag)
        jobs = GaugeMetricFamily("objects_queue_jobs", "Jobs of the queues this node holds.",
                                 labels=["queue", "state"])
        for name, by_state in sorted(self._queues.items()):
            for state in QUEUE_STATES:
                jobs.add_metric([name, state], by_state.get(state, 0))
        yield jobs
        yield GaugeMetricFamily("objects_node_lease_seconds_left",
                                "How long this node may serve without another heartbeat.",
                                host.routing.node.lease_left())


def _buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs, ``+Inf`` last."""
    pairs: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*(repr(b) for b in bounds), "+Inf"), counts, strict=True):
        total += count
        pairs.append((bound, total))
    return pairs


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    counts = list(histogram.counts)
    return HistogramMetricFamily(name, documentation, _buckets(histogram.bounds, counts),
                                 histogram.sum)


def _by_type(
    family: type[CounterMetricFamily | GaugeMetricFamily], name: str, documentation: str,
    values: dict[str, int],
) -> Metric:
    metric = family(name, documentation, labels=["type"])
    for type_name, value in sorted(values.items()):
        metric.add_metric([type_name], value)
    return metric
