"""Helpers shared by the benchmark scripts: timing loops, percentiles, PostgreSQL admin, pgbench."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass

import asyncpg
import sqlalchemy as sa


@dataclass
class Run:
    """What one closed-loop measurement produced."""

    calls: int
    seconds: float
    latencies_ns: list[int]
    cpu_seconds: float = 0.0  # this process, user + system, over the measured window
    machine_busy: float = 0.0  # fraction of all CPUs busy (any process) over the window

    @property
    def cpu_us_per_call(self) -> float:
        """This process's CPU time per measured call, in microseconds."""
        return self.cpu_seconds / max(self.calls, 1) * 1e6

    @property
    def rate(self) -> float:
        """Completed calls per second."""
        return self.calls / self.seconds

    def pct_ms(self, q: float) -> float:
        """Latency percentile ``q`` (0..100) in milliseconds."""
        return percentile_ms(self.latencies_ns, q)


def percentile_ms(latencies_ns: Sequence[int], q: float) -> float:
    """Nearest-rank percentile of nanosecond samples, in milliseconds."""
    if not latencies_ns:
        return float("nan")
    ordered = sorted(latencies_ns)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank] / 1e6


async def closed_loop(
    callers: int,
    duration: float,
    call: Callable[[int], Awaitable[object]],
    *,
    warmup: float = 1.0,
    yield_between: bool = False,
) -> Run:
    """Run ``callers`` tasks that each call ``call(caller_index)`` back to back.

    Calls that finish during the first ``warmup`` seconds are not counted. ``yield_between``
    makes each caller yield to the event loop between calls, so that callers interleave even
    when a call never suspends (an in-memory read).
    """
    perf = time.perf_counter_ns
    start = perf()
    measure_from = start + int(warmup * 1e9)
    stop_at = measure_from + int(duration * 1e9)
    samples: list[list[int]] = [[] for _ in range(callers)]

    async def caller(i: int) -> None:
        mine = samples[i]
        while True:
            t0 = perf()
            if t0 >= stop_at:
                return
            await call(i)
            t1 = perf()
            if t1 >= measure_from and t1 < stop_at:
                mine.append(t1 - t0)
            if yield_between:
                await asyncio.sleep(0)

    loop = asyncio.get_running_loop()
    marks: list[tuple[float, tuple[int, int]]] = []

    def mark() -> None:
        t = os.times()
        marks.append((t.user + t.system, _machine_cpu()))

    loop.call_later(warmup, mark)
    loop.call_later(warmup + duration, mark)
    await asyncio.gather(*(caller(i) for i in range(callers)))
    if len(marks) == 1:  # every caller stopped before the closing mark's timer ran
        mark()
    latencies = [x for s in samples for x in s]
    run = Run(len(latencies), duration, latencies)
    if len(marks) == 2:
        (cpu0, (busy0, total0)), (cpu1, (busy1, total1)) = marks
        run.cpu_seconds = cpu1 - cpu0
        run.machine_busy = (busy1 - busy0) / max(total1 - total0, 1)
    return run


def _machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # without guest time, which is already in user
    return total - idle, total


# -- PostgreSQL ------------------------------------------------------------------------------


def asyncpg_dsn(url: str) -> str:
    """The SQLAlchemy URL as a DSN asyncpg and libpq understand."""
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(False)


def fresh_schema_name(part: str) -> str:
    """A unique schema name for one benchmark part."""
    return f"bench_{part}_{uuid.uuid4().hex[:8]}"


async def pg_execute(url: str, *sql: str) -> None:
    """Run statements on a fresh connection."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


async def pg_settings(url: str, names: Sequence[str]) -> dict[str, str]:
    """``SHOW name`` for each setting, plus the server version."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        out = {n: str(await conn.fetchval(f"SHOW {n}")) for n in names}
        out["server_version"] = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    return out


async def drop_schema(url: str, schema: str) -> None:
    """Drop a benchmark schema and everything in it."""
    await pg_execute(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- pgbench ---------------------------------------------------------------------------------


@dataclass
class PgbenchResult:
    """tps and mean latency reported by pgbench, or why it could not run."""

    tps: float | None
    latency_ms: float | None
    note: str


def _libpq_env(url: str) -> tuple[list[str], dict[str, str]]:
    u = sa.engine.make_url(url)
    args = ["-h", u.host or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "postgres"]
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = u.password
    return [*args, u.database or "postgres"], env


def pgbench(url: str, script: str, clients: int, seconds: float) -> PgbenchResult:
    """Run ``pgbench`` with a custom ``script`` (prepared statements, 2 threads)."""
    exe = shutil.which("pgbench") or shutil.which("pgbench", path="/usr/bin")
    if exe is None:
        return PgbenchResult(None, None, "pgbench not installed")
    conn_args, env = _libpq_env(url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
        path = f.name
    cmd = [exe, "-n", "-M", "prepared", "-c", str(clients), "-j", "2",
           "-T", str(max(1, round(seconds))), "-f", path, *conn_args[:-1], conn_args[-1]]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(path)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection", proc.stdout)
    lat = re.search(r"latency average = ([\d.]+) ms", proc.stdout)
    if proc.returncode != 0 or tps is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return PgbenchResult(None, None, "pgbench failed: " + " | ".join(tail))
    return PgbenchResult(float(tps.group(1)), float(lat.group(1)) if lat else None, "")


# -- output ----------------------------------------------------------------------------------


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """A plain-text table with left-aligned columns."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def revision() -> str:
    """The git commit of the measured fastapi_objects, and whether it has local changes."""
    import fastapi_objects

    root = os.path.dirname(os.path.dirname(os.path.abspath(fastapi_objects.__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--",
                                "fastapi_objects"], capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return f"unknown revision ({root})"
    return f"commit {head}" + (" + uncommitted changes" if dirty.strip() else "")


def rss_bytes() -> int:
    """This process's resident set size (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- what every script prints and parses ----------------------------------------------------


def log(msg: str) -> None:
    """Print a progress line with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fmt_ms(ms: float) -> str:
    """Milliseconds as ``us`` below one, else ``ms``."""
    return f"{ms * 1000:.0f} us" if ms < 1 else f"{ms:.2f} ms"


def add_loop_option(parser: argparse.ArgumentParser) -> None:
    """``--loop uvloop|asyncio``, for ``run_on_loop``."""
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                        help="event loop (default uvloop, as uvicorn uses when it is installed)")


def run_on_loop(
    main: Callable[[argparse.Namespace], Coroutine[object, object, None]],
    args: argparse.Namespace,
) -> None:
    """Run ``main(args)`` on the event loop ``--loop`` names."""
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(main(args))
