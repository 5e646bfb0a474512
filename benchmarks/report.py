"""Plots of the benchmark figures: PNGs and docs/benchmarks.md, all measured in one run.

    python benchmarks/report.py [--database-url URL] [--quick] [--only PART,...] [--out DIR]

Parts (each measured here, with the benchmarks' own code, on the real services):

- throughput: durable calls/s against closed-loop callers for the runtime (1,000 objects:
  bench_core.py's figure 2), the baseline a FastAPI user writes today (a SQLAlchemy session
  and UPDATE..RETURNING: figure 1) and the probe (a bare asyncpg group-commit loop), each at
  every caller count, the three interleaved so that a machine getting busier hits all three;
- latency: the latency CDFs of those three runs at 64 callers;
- failover: calls answered per 100 ms through each of two uvicorn nodes around a kill -9 of
  the owner (bench_cluster.py's failover, with callers on both nodes).

Writes DIR/benchmarks/<part>.png and rewrites DIR/benchmarks.md (DIR: docs/). Needs
matplotlib (a dev dependency) and PostgreSQL (OBJECTS_BENCH_DATABASE_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql+asyncpg://root@127.0.0.1:5432/test"
PARTS = ("throughput", "latency", "failover")
SERIES = {  # name: (label, colour)
    "runtime": ("fastapi_objects: durable calls", "#3056d3"),
    "baseline": ("baseline: SQLAlchemy session + UPDATE..RETURNING", "#b54708"),
    "probe": ("probe: bare asyncpg group-commit loop", "#12805c"),
}
NODES = {"n1": "#c0262d", "n2": "#3056d3"}
BUCKET = 0.1  # seconds per bar of the failover timeline


@dataclass
class Results:
    """What the run measured, for the plots and the page."""

    meta: str = ""
    callers: list[int] = field(default_factory=list)
    runs: dict[str, dict[int, object]] = field(default_factory=dict)  # series -> callers -> Run
    failover: object | None = None  # bench_cluster.Failover
    ttl: float = 0.0
    images: list[tuple[str, str, str]] = field(default_factory=list)  # (file, title, caption)


async def measure_throughput(url: str, callers: Sequence[int], duration: float, warmup: float,
                             results: Results) -> None:
    """Each series at each caller count, interleaved."""
    from bench_core import Opts, bench_baseline, bench_durable, bench_probe

    results.callers = list(callers)
    results.runs = {name: {} for name in SERIES}
    for n in callers:
        o = Opts(url, duration, warmup, analyze=True, pool=32, callers=n)
        _log(f"{n} callers: baseline")
        results.runs["baseline"][n] = await bench_baseline(o)
        _log(f"{n} callers: probe")
        results.runs["probe"][n] = await bench_probe(o, fresh=False)
        _log(f"{n} callers: fastapi_objects")
        results.runs["runtime"][n], _ = await bench_durable(o)


async def measure_failover(url: str, ttl: float, results: Results) -> None:
    """A kill -9 of the owner, with callers on both nodes."""
    from bench_cluster import run_failover

    _log(f"failover: kill -9 of the owner, node_ttl {ttl:g} s")
    results.ttl = ttl
    results.failover = await run_failover(url, ttl, 4, ("n1", "n2"), settle=2.0)


# -- plots -------------------------------------------------------------------------------------


def plot_throughput(results: Results, out: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.6), dpi=110)
    for name, (label, colour) in SERIES.items():
        runs = results.runs[name]
        xs = sorted(runs)
        ax.plot(xs, [runs[x].rate for x in xs], marker="o", label=label, color=colour)  # type: ignore[attr-defined]
    ax.set_xscale("log", base=2)
    ax.set_xticks(results.callers, [str(c) for c in results.callers])
    ax.set_xlabel("closed-loop callers")
    ax.set_ylabel("calls per second")
    ax.set_title("Durable calls/s against callers (1,000 objects, PostgreSQL)")
    ax.grid(True, alpha=0.3)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, out / "throughput.png")
    top = 64 if 64 in results.callers else max(results.callers)  # the README's figure
    runtime, baseline, probe = (results.runs[n][top].rate for n in SERIES)  # type: ignore[attr-defined]
    results.images.append((
        "throughput.png", "Throughput against callers",
        f"At {top} callers: fastapi_objects {runtime:,.0f} calls/s = {runtime / baseline:.1f}x "
        f"the baseline ({baseline:,.0f}/s) and {runtime / probe:.0%} of the probe "
        f"({probe:,.0f}/s). Each point is {_duration(results)} of a closed loop after a warm-up.",
    ))


def plot_latency(results: Results, out: Path) -> None:
    import matplotlib.pyplot as plt

    callers = 64 if 64 in results.callers else max(results.callers)
    fig, ax = plt.subplots(figsize=(8, 4.6), dpi=110)
    rows = []
    for name, (label, colour) in SERIES.items():
        run = results.runs[name][callers]
        samples = sorted(run.latencies_ns)  # type: ignore[attr-defined]
        step = max(1, len(samples) // 2000)
        xs = [s / 1e6 for s in samples[::step]] + [samples[-1] / 1e6]
        ys = [i / len(samples) for i in range(0, len(samples), step)] + [1.0]
        ax.plot(xs, ys, label=label, color=colour)
        rows.append(f"{label.split(':')[0]} p50 {run.pct_ms(50):.2f} ms, "  # type: ignore[attr-defined]
                    f"p99 {run.pct_ms(99):.2f} ms")  # type: ignore[attr-defined]
    ax.set_xscale("log")
    ax.set_xlabel("latency of a call (ms, log scale)")
    ax.set_ylabel("fraction of calls at most this long")
    ax.set_title(f"Latency CDF at {callers} callers")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, out / "latency.png")
    results.images.append((
        "latency.png", f"Latency CDFs ({callers} callers)", "; ".join(rows) + ".",
    ))


def plot_failover(results: Results, out: Path) -> None:
    import matplotlib.pyplot as plt

    run = results.failover
    assert run is not None
    killed = run.killed  # type: ignore[attr-defined]
    answered = [(node, done - killed) for node, _, done in run.answered]  # type: ignore[attr-defined]
    failed = [(node, at - killed) for node, at, _ in run.failed]  # type: ignore[attr-defined]
    start = min(t for _, t in answered)
    end = max(t for _, t in answered)
    buckets = int((end - start) / BUCKET) + 1
    fig, ax = plt.subplots(figsize=(9, 5.2), dpi=110)
    xs = [start + i * BUCKET for i in range(buckets)]
    for node, colour in NODES.items():
        role = "the owner, killed" if node == "n1" else "forwarding, then the owner"
        ax.step(xs, _per_bucket(answered, node, start, buckets), where="post", color=colour,
                label=f"answered through {node} ({role})")
        errors = _per_bucket(failed, node, start, buckets)
        if any(errors):
            ax.step(xs, errors, where="post", color=colour, linestyle=":", alpha=0.5,
                    label=f"failed through {node}")
    first = run.first_after_kill()  # type: ignore[attr-defined]
    ax.axvline(0, color="black", linestyle="--", linewidth=1)
    ax.annotate("kill -9 of n1", (0, ax.get_ylim()[1] * 0.92), xytext=(6, 0),
                textcoords="offset points", fontsize=8)
    gap = None if first is None else first - killed
    if gap is not None:
        ax.axvline(gap, color="#12805c", linestyle=":", linewidth=1.2)
        ax.annotate(f"first answer on n2: +{gap:.2f} s", (gap, ax.get_ylim()[1] * 0.82),
                    xytext=(6, 0), textcoords="offset points", fontsize=8)
    ax.set_xlabel("seconds from the kill")
    ax.set_ylabel(f"calls per {BUCKET * 1000:.0f} ms")
    ax.set_title(f"Failover after kill -9 of the owner (node_ttl {results.ttl:g} s)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8)
    _save(fig, out / "failover.png")
    proven = "(proven by this node)" in run.log  # type: ignore[attr-defined]
    how = ("n2 proved n1 dead (same machine: its process was gone) and took the object at "
           "once" if proven else f"n2 waited for n1's heartbeat to be {results.ttl:g} s old")
    results.images.append((
        "failover.png", "Failover timeline",
        f"4 sequential callers on each node call `POST /counters/fo/increment`; n2 forwards to "
        f"n1, the owner, until n1 is killed; {how}; the first call sent after the kill was "
        + (f"answered {gap:.2f} s after it. " if gap is not None else "never answered. ")
        + f"Failed calls: {sum(1 for n, _ in failed if n == 'n1'):,} through n1 (its callers "
        "find it gone, and retry every 10 ms), "
        f"{sum(1 for n, _ in failed if n == 'n2'):,} through n2 (in flight at the kill: "
        "outcome_unknown, never retried for the caller).",
    ))


def _per_bucket(
    events: Sequence[tuple[str, float]], node: str, start: float, buckets: int
) -> list[int]:
    """How many of ``node``'s events fall in each ``BUCKET`` from ``start``."""
    counts = [0] * buckets
    for who, t in events:
        if who == node and t >= start:
            counts[min(int((t - start) / BUCKET), buckets - 1)] += 1
    return counts


def _save(fig: object, path: Path) -> None:
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path)  # type: ignore[attr-defined]
    import matplotlib.pyplot as plt

    plt.close(fig)  # type: ignore[arg-type]
    _log(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def _duration(results: Results) -> str:
    run = next(iter(results.runs["runtime"].values()))
    return f"{run.seconds:g} s"  # type: ignore[attr-defined]


# -- the page ----------------------------------------------------------------------------------


def write_page(results: Results, page: Path) -> None:
    lines = [
        "# Benchmark plots",
        "",
        "Written by `benchmarks/report.py` from one run of the benchmarks' own code on this",
        "project's machine (a shared 2-core machine: compare figures of one run, not across",
        "days). The figures table is in the [README](../README.md#figures); how each figure is",
        "measured is in [benchmarks/README.md](../benchmarks/README.md).",
        "",
        results.meta,
        "",
    ]
    for file, title, caption in results.images:
        lines += [f"## {title}", "", f"![{title}](benchmarks/{file})", "", caption, ""]
    lines += ["Regenerate: `.venv/bin/python benchmarks/report.py` (about 3 minutes; "
              "`--quick` about 1).", ""]
    page.write_text("\n".join(lines))
    _log(f"wrote {page.relative_to(ROOT) if page.is_relative_to(ROOT) else page}")


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def main(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from _common import pg_settings, revision

    only = set(args.only.split(",")) if args.only else set(PARTS)
    unknown = only - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}; known: {', '.join(PARTS)}")
    url = args.database_url
    settings = await pg_settings(url, ["fsync", "synchronous_commit"])
    load = os.getloadavg()[0]
    results = Results(meta=(
        f"Run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, fastapi_objects at {revision()}, "
        f"PostgreSQL {settings['server_version']} (fsync={settings['fsync']}, "
        f"synchronous_commit={settings['synchronous_commit']}), Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load:.2f} at the "
        "start."
    ))
    out = Path(args.out)
    images = out / "benchmarks"
    images.mkdir(parents=True, exist_ok=True)
    if only & {"throughput", "latency"}:
        callers = (1, 8, 64) if args.quick else (1, 4, 16, 64, 128)
        duration, warmup = (1.5, 0.5) if args.quick else (3.0, 1.0)
        await measure_throughput(url, callers, duration, warmup, results)
        if "throughput" in only:
            plot_throughput(results, images)
        if "latency" in only:
            plot_latency(results, images)
    if "failover" in only:
        await measure_failover(url, args.ttl, results)
        plot_failover(results, images)
    results.meta += f" Load average {os.getloadavg()[0]:.2f} at the end."
    write_page(results, out / "benchmarks.md")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url",
                   default=os.environ.get("OBJECTS_BENCH_DATABASE_URL", DEFAULT_URL))
    p.add_argument("--quick", action="store_true",
                   help="callers 1, 8 and 64, 1.5 s each (about a minute)")
    p.add_argument("--only", default="", help=f"comma-separated parts: {', '.join(PARTS)}")
    p.add_argument("--ttl", type=float, default=10.0, help="node_ttl of the failover nodes")
    p.add_argument("--out", default=str(ROOT / "docs"),
                   help="folder for benchmarks.md and benchmarks/*.png (default docs/)")
    return p.parse_args()


if __name__ == "__main__":
    ns = _parse()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, bench_core
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(ns))
    else:
        uvloop.run(main(ns))
