"""``Metrics``: the observer that counts what a node does, in plain Python.

A call costs a clock read at each end (in integer nanoseconds: the float clock costs more),
one dict lookup (by the method's spec), a bisect and a few integer additions: no lock, no
label lookup, no allocation. prometheus-client's own
``labels(...).inc()`` costs several times that (a lock per value, a label tuple per call), so
the counts live here and ``prometheus.py`` turns them into families when scraped.

What the families mean is in ``prometheus.py``; how a call is counted: once, on the node it
was made on (the one its caller waited on), with the time that caller waited, whether it ran
there or was forwarded. A forwarded call's owner does not count it again.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from time import perf_counter, perf_counter_ns
from typing import TYPE_CHECKING, Any

from .observe import Observer, outcome

if TYPE_CHECKING:
    from .committer import PendingCommit
    from .methods import MethodSpec
    from .object import DurableObject

CALL_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0)
_CALL_NS = tuple(round(bound * 1e9) for bound in CALL_SECONDS)
BATCH_SIZES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
COMMIT_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LAG_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Histogram:
    """Observations counted per bucket, and their sum.

    ``counts[i]``: at most ``bounds[i]`` and above the bound before; the last: above them all.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value``."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """How many values were observed."""
        return sum(self.counts)


class CallStats:
    """The calls of one method of one type: their durations and their failures by type.

    Durations are counted per bucket of ``CALL_SECONDS`` as ``Histogram`` counts them, their
    sum in nanoseconds; ``duration()`` is the histogram.
    """

    __slots__ = ("counts", "errors", "method", "sum_ns", "type_name")

    def __init__(self, type_name: str, method: str) -> None:
        self.type_name = type_name
        self.method = method
        self.counts = [0] * (len(CALL_SECONDS) + 1)
        self.sum_ns = 0
        self.errors: dict[str, int] = {}

    def duration(self) -> Histogram:
        """The calls' durations as a histogram in seconds (a copy)."""
        histogram = Histogram(CALL_SECONDS)
        histogram.counts = list(self.counts)
        histogram.sum = self.sum_ns / 1e9
        return histogram

    def failed(self, error: BaseException) -> None:
        """Count a failure by its outcome."""
        kind = outcome(error)
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Metrics(Observer):
    """Counts calls, thaws, hibernations, commit batches and alarm lags (see the module)."""

    def __init__(self) -> None:
        self.calls: dict[MethodSpec, CallStats] = {}
        self.thaws: dict[str, int] = {}
        self.hibernations: dict[str, int] = {}
        self.batch_size = Histogram(BATCH_SIZES)
        self.commit_seconds = Histogram(COMMIT_SECONDS)
        self.alarm_lag = Histogram(LAG_SECONDS)

    def call(
        self, cls: type[DurableObject[Any]], key: str, spec: MethodSpec, forwarded: bool
    ) -> int | None:
        """The start time, unless another node sent the call (it counted it)."""
        return None if forwarded else perf_counter_ns()

    def call_end(
        self, token: int | None, cls: type[DurableObject[Any]], spec: MethodSpec,
        error: BaseException | None,
    ) -> None:
        """Count the call, its duration and, if it failed, its error type."""
        if token is None:
            return
        elapsed = perf_counter_ns() - token
        stats = self.calls.get(spec)
        if stats is None:
            stats = self.calls[spec] = CallStats(cls.type_name, spec.name)
        stats.counts[bisect_left(_CALL_NS, elapsed)] += 1
        stats.sum_ns += elapsed
        if error is not None:
            stats.failed(error)

    def thaw_end(self, token: Any, type_name: str, error: BaseException | None) -> None:
        """Count an object thawed here (not a claim another node won, nor a failed load)."""
        if error is None:
            self.thaws[type_name] = self.thaws.get(type_name, 0) + 1

    def batch(self, batch: list[PendingCommit]) -> float:
        """The start time."""
        return perf_counter()

    def batch_end(self, token: float, batch: list[PendingCommit], failed: int) -> None:
        """Count the batch's size and how long its transaction took."""
        self.commit_seconds.observe(perf_counter() - token)
        self.batch_size.observe(len(batch))

    def hibernated(self, type_name: str) -> None:
        """Count a hibernation."""
        self.hibernations[type_name] = self.hibernations.get(type_name, 0) + 1

    def alarm(self, type_name: str, lag: float) -> None:
        """Count an alarm's lag."""
        self.alarm_lag.observe(max(lag, 0.0))
