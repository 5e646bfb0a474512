"""Figures of the core runtime (issue 2), all measured in one run on PostgreSQL.

    python benchmarks/bench_core.py [--database-url URL] [--duration 5] [--quick]

Each part runs in its own fresh schema, dropped at the end. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import sqlalchemy as sa
from _common import (  # the script's folder is on sys.path
    Run,
    asyncpg_dsn,
    closed_loop,
    drop_schema,
    fresh_schema_name,
    percentile_ms,
    pg_execute,
    pg_settings,
    pgbench,
    revision,
    rss_bytes,
    table,
)
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from fastapi_objects.runtime import DurableObject, Runtime, readonly

SCRIPT = os.path.abspath(__file__)
DEFAULT_URL = "postgresql+asyncpg://root@127.0.0.1:5432/test"
CALLERS = 64
OBJECTS = 1_000


class CounterState(BaseModel):
    value: int = 0


class Counter(DurableObject[CounterState]):
    type_name = "bench_counter"
    idle_timeout = 3600.0  # nothing hibernates while a part runs

    async def increment(self, by: int = 1) -> int:
        self.state.value += by
        return self.state.value

    @readonly
    async def get(self) -> int:
        return self.state.value


class Item(BaseModel):
    id: int
    name: str
    data: str


class DocState(BaseModel):
    title: str = ""
    items: list[Item] = []


class Doc(DurableObject[DocState]):
    type_name = "bench_doc"
    idle_timeout = 3600.0

    @readonly
    async def size(self) -> int:
        return len(self.state.items)


@dataclass
class Report:
    """Rows of the final table, and notes printed under it."""

    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: str, p50: str, p99: str, target: str, ok: bool | None) -> None:
        verdict = "" if ok is None else ("PASS" if ok else "MISS")
        self.rows.append([name, value, p50, p99, target, verdict])


def _ms(x: float) -> str:
    return f"{x * 1000:.1f} us" if x < 0.1 else f"{x:.2f} ms"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


METRICS = False  # --metrics: every runtime counts its calls for Prometheus


def _runtime(url: str, schema: str, *objects: type[DurableObject[Any]]) -> Runtime:
    rt = Runtime(objects=list(objects), database_url=url, schema=schema, create_tables=True)
    if METRICS:
        rt.metrics()
    return rt


def _time_commits(rt: Runtime) -> list[float]:
    """Record how long each group-commit transaction takes (wraps this runtime's storage)."""
    seconds: list[float] = []
    commit = rt.storage.commit

    async def timed(*args: Any, **kwargs: Any) -> list[bool]:
        t = time.perf_counter()
        try:
            return await commit(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - t)

    rt.storage.commit = timed  # type: ignore[method-assign]
    return seconds


async def _sum_values(url: str, schema: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        total = await conn.fetchval(
            "SELECT coalesce(sum((state->>'value')::bigint), 0) "
            f'FROM "{schema}".objects_checkpoints'
        )
    finally:
        await conn.close()
    return int(total)


# -- the machine's ceiling -------------------------------------------------------------------


@dataclass
class Ceiling:
    """What pgbench commits here: 1-row transactions per second, batched rows per second."""

    single_tps: float | None
    batched_rows: float | None


async def bench_pgbench(url: str, seconds: float, rep: Report) -> Ceiling:
    schema = fresh_schema_name("pgbench")
    rows = CALLERS * 100
    await pg_execute(
        url, f'CREATE SCHEMA "{schema}"',
        f'CREATE TABLE "{schema}".counters (key int PRIMARY KEY, value bigint NOT NULL)',
        f'INSERT INTO "{schema}".counters SELECT g, 0 FROM generate_series(0, {rows - 1}) g',
    )
    single_sql = (f"\\set k random(0, {OBJECTS - 1})\n"
                  f'UPDATE "{schema}".counters SET value = value + 1 WHERE key = :k;\n')
    # Each client updates its own 100 rows in one transaction: no lock waits, no deadlocks.
    batch_sql = "BEGIN;\n" + "".join(
        f'UPDATE "{schema}".counters SET value = value + 1 WHERE key = :client_id * 100 + {i};\n'
        for i in range(100)
    ) + "END;\n"
    try:
        single = pgbench(url, single_sql, CALLERS, seconds)
        rep.add(f"pgbench: 1-row UPDATE transactions, {CALLERS} clients",
                f"{single.tps:,.0f} tx/s" if single.tps else single.note, "",
                _ms(single.latency_ms) if single.latency_ms else "", "(machine ceiling)", None)
        batched_rows: float | None = None
        for clients in (CALLERS, 8):  # 8: fewer, bigger writers suit 2 cores better
            batched = pgbench(url, batch_sql, clients, seconds)
            rows_s = batched.tps * 100 if batched.tps is not None else None
            if rows_s is not None:
                batched_rows = max(batched_rows or 0.0, rows_s)
            rep.add(f"pgbench: 100-row UPDATE transactions, {clients} clients",
                    f"{rows_s:,.0f} rows/s" if rows_s else batched.note, "",
                    _ms(batched.latency_ms) if batched.latency_ms else "", "(machine ceiling)",
                    None)
    finally:
        await drop_schema(url, schema)
    rep.notes.append("pgbench runs in its own process (prepared statements, 2 threads); its "
                     "latency column is the mean per transaction (pgbench reports no p99).")
    return Ceiling(single.tps, batched_rows)


# -- 1. the baseline a FastAPI user writes today ---------------------------------------------


@dataclass(frozen=True)
class Opts:
    """What every throughput part needs."""

    url: str
    duration: float
    warmup: float
    analyze: bool
    pool: int
    callers: int = CALLERS  # closed-loop callers of the baseline, the probe and figure 2


async def _analyze(o: Opts, table: str) -> None:
    # Steady state: autovacuum analyzes a table this size within a minute (--no-analyze skips).
    if o.analyze:
        await pg_execute(o.url, f"ANALYZE {table}")


async def bench_baseline(o: Opts) -> Run:
    schema = fresh_schema_name("baseline")
    await pg_execute(
        o.url, f'CREATE SCHEMA "{schema}"',
        f'CREATE TABLE "{schema}".counters (key text PRIMARY KEY, value bigint NOT NULL)',
        f'INSERT INTO "{schema}".counters '
        f"SELECT 'k' || g, 0 FROM generate_series(0, {OBJECTS - 1}) g",
    )
    engine = create_async_engine(o.url, pool_size=o.pool, max_overflow=0)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    stmt = sa.text(
        f'UPDATE "{schema}".counters SET value = value + 1 WHERE key = :k RETURNING value'
    )
    keys = [f"k{i}" for i in range(OBJECTS)]
    rnd = random.Random(1).randrange

    async def call(_: int) -> None:
        async with sessions() as session, session.begin():
            (await session.execute(stmt, {"k": keys[rnd(OBJECTS)]})).scalar_one()

    try:
        await _analyze(o, f'"{schema}".counters')
        return await closed_loop(o.callers, o.duration, call, warmup=o.warmup)
    finally:
        await engine.dispose()
        await drop_schema(o.url, schema)


def _add_baseline(rep: Report, label: str, run: Run, pool: int) -> None:
    rep.add(f"1{label}. baseline: SQLAlchemy session + UPDATE..RETURNING (pool {pool})",
            f"{run.rate:,.0f} calls/s", _ms(run.pct_ms(50)), _ms(run.pct_ms(99)), "(reference)",
            None)


# -- the probe: a bare asyncpg group-commit loop ---------------------------------------------


async def bench_probe(o: Opts, *, fresh: bool) -> Run:
    """The most a Python process commits here: group commit with nothing else around it.

    64 callers over 1,000 keys, each call a turn on a dict (``value += 1``) that waits until a
    batch carrying its key is durable. One writer on one asyncpg connection forms each batch
    from whatever callers are waiting (one row per key, later turns merged into it) and runs
    ONE ``UPDATE ... FROM unnest(...)``, autocommitted, one batch in flight at a time, as the
    runtime's committer does. The row is shaped like a checkpoint's (rev and a jsonb state).
    ``fresh``: measured right after the table is created and filled (no ANALYZE, no warm-up
    of the plan), like a freshly created database.
    """
    schema = fresh_schema_name("probe")
    table = f'"{schema}".probe'
    await pg_execute(
        o.url, f'CREATE SCHEMA "{schema}"',
        f"CREATE TABLE {table} (key text PRIMARY KEY, rev bigint NOT NULL, "
        "state jsonb NOT NULL) WITH (fillfactor = 70)",
        f"INSERT INTO {table} SELECT 'k' || g, 1, '{{\"value\": 1}}' "
        f"FROM generate_series(0, {OBJECTS - 1}) g",
    )
    if not fresh:
        await _analyze(o, table)
    keys = [f"k{i}" for i in range(OBJECTS)]
    values = dict.fromkeys(keys, 1)
    revs = dict.fromkeys(keys, 1)
    waiting: dict[str, list[asyncio.Future[None]]] = {}
    wakeup = asyncio.Event()
    rnd = random.Random(2).randrange
    acked = 0
    stmt = (f"UPDATE {table} t SET rev = v.rev, state = v.state::jsonb "
            "FROM unnest($1::text[], $2::bigint[], $3::text[]) AS v(key, rev, state) "
            "WHERE t.key = v.key")
    conn = await asyncpg.connect(asyncpg_dsn(o.url))

    async def writer() -> None:
        nonlocal waiting
        while True:
            if not waiting:
                wakeup.clear()
                await wakeup.wait()
            batch, waiting = waiting, {}
            ks = list(batch)
            await conn.execute(stmt, ks, [revs[k] for k in ks],
                               [json.dumps({"value": values[k]}) for k in ks])
            for futures in batch.values():
                for fut in futures:
                    fut.set_result(None)

    async def call(_: int) -> None:
        nonlocal acked
        key = keys[rnd(OBJECTS)]
        values[key] += 1  # the turn
        revs[key] += 1
        fut = asyncio.get_running_loop().create_future()
        queued = waiting.get(key)
        if queued is None:
            waiting[key] = [fut]
            wakeup.set()
        else:
            queued.append(fut)
        await fut
        acked += 1

    task = asyncio.create_task(writer())
    try:
        run = await closed_loop(o.callers, o.duration, call, warmup=o.warmup)
        stored = await conn.fetchval(f"SELECT sum((state->>'value')::bigint) FROM {table}")
    finally:
        task.cancel()
        await conn.close()
        await drop_schema(o.url, schema)
    _check(stored == OBJECTS + acked, f"probe: stored sum {stored} != {OBJECTS + acked}")
    return run


# -- 2, 3, 4. durable calls ------------------------------------------------------------------


def _cpu_note(run: Run) -> str:
    return (f"this process used {run.cpu_us_per_call:,.0f} us of CPU per call; all CPUs were "
            f"{run.machine_busy:.0%} busy")


def _writer_note(label: str, seconds: list[float], wall: float, rt: Runtime) -> str:
    stats = rt.stats()
    busy = sum(seconds)
    mean_ms = busy / max(len(seconds), 1) * 1000
    return (
        f"{label}: {stats.turns:,} turns, {stats.commits:,} object commits in {stats.batches:,} "
        f"transactions ({stats.commits / max(stats.batches, 1):.1f} objects each), "
        f"{mean_ms:.2f} ms per storage.commit() (their durations add up to {busy / wall:.0%} "
        "of the time: the writer may overlap batches)"
    )


async def bench_durable(o: Opts, *, fresh: bool = False) -> tuple[Run, str]:
    """64 callers over 1,000 objects; ``fresh``: right after the rows are created (no ANALYZE)."""
    schema = fresh_schema_name("durable")
    keys = [f"c{i}" for i in range(OBJECTS)]
    rnd = random.Random(2).randrange
    acked = 0
    try:
        async with _runtime(o.url, schema, Counter) as rt:
            await _gather_limited([rt.get(Counter, k).increment(1) for k in keys])  # create rows
            if not fresh:
                await _analyze(o, f'"{schema}".objects_checkpoints')

            async def call(_: int) -> None:
                nonlocal acked
                await rt.get(Counter, keys[rnd(OBJECTS)]).increment(1)
                acked += 1

            seconds = _time_commits(rt)
            run = await closed_loop(o.callers, o.duration, call, warmup=o.warmup)
            note = _writer_note("2f" if fresh else "2", seconds, o.duration + o.warmup, rt)
        stored = await _sum_values(o.url, schema)
    finally:
        await drop_schema(o.url, schema)
    _check(stored == OBJECTS + acked,
           f"durable: stored sum {stored} != acknowledged {OBJECTS + acked}")
    return run, (f"{note}; {_cpu_note(run)}. The stored sum equals every acknowledged call "
                 f"({stored:,}).")


def _add_durable(rep: Report, run: Run, baselines: list[Run]) -> float:
    base = sum(b.rate for b in baselines) / len(baselines)
    ratio = run.rate / base
    rep.add("2. durable increment, 64 callers over 1,000 objects",
            f"{run.rate:,.0f} calls/s = {ratio:.1f}x baseline", _ms(run.pct_ms(50)),
            _ms(run.pct_ms(99)), ">= 10x baseline", ratio >= 10)
    rep.notes.append(
        f"1-2: the baseline ran before the probe and figure 2 and again after them; the ratio is "
        f"to their mean ({base:,.0f} calls/s), so that load drifting during the run shows "
        "instead of skewing it. Baseline: " + "; ".join(_cpu_note(b) for b in baselines) + "."
    )
    return base


def _add_probe(rep: Report, label: str, probe: Run, durable: Run) -> None:
    share = durable.rate / probe.rate
    rep.add(f"probe: bare asyncpg group commit, 64 callers over 1,000 keys ({label})",
            f"{probe.rate:,.0f} calls/s", _ms(probe.pct_ms(50)), _ms(probe.pct_ms(99)),
            "(reference)", None)
    rep.add(f"2{'f' if label == 'fresh' else ''}. durable increment as a share of the probe "
            f"({label})", f"{durable.rate:,.0f} calls/s = {share:.0%} of probe",
            _ms(durable.pct_ms(50)), _ms(durable.pct_ms(99)), ">= 60% of probe", share >= 0.6)


async def bench_hot(o: Opts, rep: Report) -> Run:
    schema = fresh_schema_name("hot")
    acked = 0
    try:
        async with _runtime(o.url, schema, Counter) as rt:
            await rt.get(Counter, "hot").increment(1)
            await _analyze(o, f'"{schema}".objects_checkpoints')

            async def call(_: int) -> None:
                nonlocal acked
                await rt.get(Counter, "hot").increment(1)
                acked += 1

            seconds = _time_commits(rt)
            run = await closed_loop(CALLERS, o.duration, call, warmup=o.warmup)
            note = _writer_note("3", seconds, o.duration + o.warmup, rt)
        stored = await _sum_values(o.url, schema)
    finally:
        await drop_schema(o.url, schema)
    _check(stored == 1 + acked, f"hot: stored value {stored} != acknowledged {1 + acked}")
    rep.add("3. durable increment, 64 callers on ONE object", f"{run.rate:,.0f} calls/s",
            _ms(run.pct_ms(50)), _ms(run.pct_ms(99)), ">= 10,000/s", run.rate >= 10_000)
    rep.notes.append(f"{note}; {_cpu_note(run)}. The stored value equals every acknowledged "
                     f"call ({stored:,}).")
    return run


async def bench_readonly(o: Opts, rep: Report) -> tuple[Run, Run]:
    url, duration, warmup = o.url, o.duration, o.warmup
    schema = fresh_schema_name("readonly")
    try:
        async with _runtime(url, schema, Counter) as rt:
            handle = rt.get(Counter, "ro")
            await handle.increment(41)
            many = await closed_loop(CALLERS, duration, lambda _: handle.get(), warmup=warmup,
                                     yield_between=True)
            one = await closed_loop(1, duration, lambda _: handle.get(), warmup=warmup)
            fresh = await closed_loop(1, duration, lambda _: rt.get(Counter, "ro").get(),
                                      warmup=warmup)
    finally:
        await drop_schema(url, schema)
    for name, run in (("64 interleaved callers", many), ("1 sequential caller", one)):
        rep.add(f"4. read-only get() on an active object, {name}", f"{run.rate:,.0f} calls/s",
                _ms(run.pct_ms(50)), _ms(run.pct_ms(99)), ">= 100,000/s", run.rate >= 100_000)
    rep.add("   (same, 1 caller, rt.get(...) handle made per call)", f"{fresh.rate:,.0f} calls/s",
            _ms(fresh.pct_ms(50)), _ms(fresh.pct_ms(99)), "(context)", None)
    rep.notes.append(
        "4: the interleaved callers yield to the event loop after each call (asyncio.sleep(0)), "
        "so that their cost is in the figure; the sequential caller reuses one handle."
    )
    return many, one


# -- 5. thaw ---------------------------------------------------------------------------------


def _doc_states(n: int, seed: int) -> tuple[list[str], int]:
    """``n`` distinct ~10 KB Doc states as JSON text (random hex data, so they don't compress)."""
    rnd = random.Random(seed)
    pool = [rnd.randbytes(80).hex() for _ in range(4096)]
    states = []
    for i in range(n):
        items = [{"id": j, "name": f"item-{i}-{j}", "data": pool[rnd.randrange(4096)]}
                 for j in range(50)]
        states.append(json.dumps({"title": f"doc {i}", "items": items}, separators=(",", ":")))
    return states, sum(len(s) for s in states) // max(n, 1)


async def _bulk_load_docs(url: str, schema: str, n: int) -> tuple[int, int]:
    """COPY ``n`` hibernated Doc checkpoints; return the mean state size and the table's size."""
    now = datetime.now(UTC)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    size = 0
    try:
        for start in range(0, n, 5_000):
            states, size = _doc_states(min(5_000, n - start), seed=start)
            records = [
                (Doc.type_name, f"d{start + i}", 1, 0, 0, s, 1, "hibernated", "{}", now, now)
                for i, s in enumerate(states)
            ]
            await conn.copy_records_to_table(
                "objects_checkpoints", schema_name=schema, records=records,
                columns=["type", "key", "rev", "journal_rev", "snapshot_rev", "state",
                         "state_version", "status", "metadata", "created_at", "updated_at"],
            )
        await conn.execute(f'VACUUM (ANALYZE) "{schema}".objects_checkpoints')
        table_bytes = await conn.fetchval(
            f"SELECT pg_total_relation_size('\"{schema}\".objects_checkpoints')"
        )
        try:
            await conn.execute("CHECKPOINT")  # so the load's WAL flush does not land mid-thaw
        except asyncpg.PostgresError:
            pass
    finally:
        await conn.close()
    return size, int(table_bytes)


async def bench_thaw(url: str, stored: int, samples: int, rep: Report) -> float:
    schema = fresh_schema_name("thaw")
    try:
        async with _runtime(url, schema, Doc) as rt:
            t0 = time.perf_counter()
            size, table_bytes = await _bulk_load_docs(url, schema, stored)
            _log(f"   loaded {stored:,} checkpoints of ~{size:,} bytes "
                 f"in {time.perf_counter() - t0:.1f} s")
            keys = random.Random(3).sample(range(stored), samples + 50)
            latencies = []
            for n, i in enumerate(keys):
                t = time.perf_counter_ns()
                _check(await rt.get(Doc, f"d{i}").size() == 50, "thaw: wrong state")
                if n >= 50:  # the first 50 warm up the pool and caches
                    latencies.append(time.perf_counter_ns() - t)
            thaws = rt.stats().thaws
    finally:
        await drop_schema(url, schema)
    _check(thaws == samples + 50, f"thaw: {thaws} thaws, expected {samples + 50}")
    p99 = percentile_ms(latencies, 99)
    rep.add(f"5. thaw a ~{size / 1000:.0f} KB state, {stored:,} stored, {samples:,} thaws",
            f"mean {sum(latencies) / len(latencies) / 1e6:.2f} ms",
            _ms(percentile_ms(latencies, 50)),
            _ms(p99), "p99 <= 5 ms", p99 <= 5.0)
    rep.notes.append(
        f"5: {stored:,} hibernated checkpoints of {size:,} B of JSON each (50 items of random "
        f"data, so they barely compress) were COPYed in; the table takes "
        f"{table_bytes / 2**20:,.0f} MiB on disk. {samples:,} random distinct objects were then "
        "called one at a time (a read-only call, timed from the call to its result): each call "
        "claims the object and reads its checkpoint (one statement), validates the state into "
        "its pydantic model and runs on_activate; it writes nothing else."
    )
    return p99


# -- 6. memory -------------------------------------------------------------------------------


async def _activate(rt: Runtime, keys: list[str]) -> None:
    await _gather_limited([rt.get(Counter, k).get() for k in keys])


def _state_bytes(n: int) -> float:
    """Traced bytes per tiny state: the model instance plus the JSON copy the runtime keeps."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = []
    for _ in range(n):
        state = CounterState()
        held.append((state, state.model_dump(mode="json")))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    holder = sys.getsizeof(held) + n * sys.getsizeof((None, None))  # the list, not the states
    return (after - before - holder) / n


async def memory_part(url: str, n: int) -> dict[str, float]:
    """Bytes per newly activated idle object, by RSS and by tracemalloc (run in a fresh process)."""
    schema = fresh_schema_name("memory")
    try:
        async with _runtime(url, schema, Counter) as rt:
            await _activate(rt, [f"w{i}" for i in range(1_000)])  # warm pools and caches
            keys_rss = [f"r{i}" for i in range(n)]
            keys_traced = [f"t{i}" for i in range(n)]
            gc.collect()
            rss0 = rss_bytes()
            await _activate(rt, keys_rss)
            gc.collect()
            rss = (rss_bytes() - rss0) / n
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            await _activate(rt, keys_traced)
            gc.collect()
            traced = (tracemalloc.get_traced_memory()[0] - before) / n
            tracemalloc.stop()
            active = rt.stats().active
    finally:
        await drop_schema(url, schema)
    _check(active == 2 * n + 1_000, f"memory: {active} active objects, expected {2 * n + 1_000}")
    return {"rss": rss, "traced": traced, "state": _state_bytes(n)}


async def bench_memory(url: str, n: int, loop: str, rep: Report) -> float:
    # A fresh interpreter, so that memory freed by the other parts does not hide the RSS growth.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, SCRIPT, "--database-url", url, "--loop", loop,
        *(["--metrics"] if METRICS else []),
        "--memory-part", str(n), stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    _check(proc.returncode == 0, f"memory part exited with {proc.returncode}")
    m = json.loads(out.decode().strip().splitlines()[-1])
    per_object = m["traced"] - m["state"]
    rep.add(f"6. memory per active idle object, state excluded (N={n:,})",
            f"{per_object:,.0f} B (RSS: {m['rss'] - m['state']:,.0f} B)", "", "", "<= 4 KB",
            per_object <= 4096)
    rep.notes.append(
        f"6: in a fresh process, after 1,000 warm-up activations, {n:,} new objects are activated "
        f"(one read-only call each; they stay active and idle). tracemalloc counts every byte "
        f"allocated and still held: {m['traced']:,.0f} B per object; minus {m['state']:,.0f} B "
        "measured the same way for one tiny state (the pydantic model plus the JSON copy the "
        f"runtime keeps to detect changes). RSS: a second batch of {n:,} objects measured without "
        f"tracemalloc grew the RSS by {m['rss']:,.0f} B per object. Keys are made beforehand by "
        "the benchmark and not counted."
    )
    return per_object


# -- against what benchmarks/README.md recorded ------------------------------------------------

# The full run at cf1e8e7 ("After the cheaper call deadline"): throughput figures as ratios to
# that run's mean baseline (5,320 calls/s), so that they compare across days; thaw and memory
# as measured. --quick (smaller sizes for 5 and 6) compares with the README's --quick runs:
# 7.0x for figure 2 at cf1e8e7, 1,997 B at 160915c, and thaw p99 3.0 ms since a thaw claims its
# object durably first (one fsync more; the README's figures). The full run's thaw p99 (0.81
# ms) predates that claim.
RECORDED = {
    "2. durable / baseline": 34_270 / 5_320,
    "3. hot object / baseline": 64_708 / 5_320,
    "4. read-only, 64 callers / baseline": 277_923 / 5_320,
    "4. read-only, 1 caller / baseline": 159_330 / 5_320,
    "5. thaw p99 (ms, lower is better)": 0.81,
    "6. bytes per idle object (lower is better)": 1_850,
}
RECORDED_QUICK = {
    "2. durable / baseline": 7.0,
    "5. thaw p99 (ms, lower is better)": 3.0,
    "6. bytes per idle object (lower is better)": 1_997,
}


def _against_recorded(quick: bool, now: dict[str, float]) -> str:
    """Each figure against the README's, flagged when more than 10% worse."""
    rows = []
    for name, value in now.items():
        then = (RECORDED_QUICK if quick else {}).get(name, RECORDED[name])
        change = value / then
        worse = change > 1.1 if "lower is better" in name else change < 0.9
        rows.append([name, f"{value:,.2f}", f"{then:,.2f}", f"{change:.2f}",
                     "REGRESSED (>10%)" if worse else "ok"])
    return ("Against benchmarks/README.md (throughput as ratios to each run's own baseline, "
            "thaw and memory absolute):\n"
            + table(rows, ["figure", "now", "recorded", "now/recorded", ""]))


def _probe_note(warm: Run, fresh: Run) -> str:
    return (
        "probe: 64 callers over 1,000 keys, each call a turn on a dict that waits for its "
        "batch; one writer on one asyncpg connection runs ONE UPDATE ... FROM unnest(keys, "
        "revs, states) per batch, formed from whatever callers are waiting (one batch in "
        "flight). Warm: table ANALYZEd; fresh: measured right after CREATE TABLE and INSERT. "
        f"Warm {_cpu_note(warm)}; fresh {_cpu_note(fresh)}."
    )


# -- driver ----------------------------------------------------------------------------------


async def _gather_limited(coros: list[Any], limit: int = CALLERS) -> None:
    it = iter(coros)

    async def worker() -> None:
        for coro in it:
            await coro

    await asyncio.gather(*(worker() for _ in range(limit)))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SystemExit(f"benchmark invariant failed: {message}")


async def main(args: argparse.Namespace) -> None:
    global METRICS
    METRICS = args.metrics
    url = args.database_url
    if args.memory_part:
        print(json.dumps(await memory_part(url, args.memory_part)))
        return
    quick = args.quick
    duration = args.duration if args.duration is not None else (2.0 if quick else 5.0)
    warmup = 0.5 if quick else 1.0
    thaw_stored = 10_000 if quick else 100_000
    thaw_samples = 1_000 if quick else 2_000
    mem_n = 10_000 if quick else 20_000
    settings = await pg_settings(url, ["fsync", "synchronous_commit", "shared_buffers"])
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    print(f"bench_core: {url}  PostgreSQL {settings['server_version']}  fsync={settings['fsync']}  "
          f"synchronous_commit={settings['synchronous_commit']}  "
          f"shared_buffers={settings['shared_buffers']}")
    print(f"fastapi_objects at {revision()}")
    print(f"Python {sys.version.split()[0]}, event loop {loop_name}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}; {duration:g} s per throughput figure "
          f"(+{warmup:g} s warm-up), {CALLERS} callers; tables "
          + ("not ANALYZEd (--no-analyze)" if args.no_analyze else "ANALYZEd after setup")
          + "\n")
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"WARNING: the machine is busy before the run (load average {load:.2f} on "
              f"{os.cpu_count()} CPUs): every figure here will be lower and noisier.\n")
    started = time.perf_counter()
    rep = Report()
    o = Opts(url, duration, warmup, not args.no_analyze, args.baseline_pool)
    _log("pgbench (the machine's ceiling)")
    ceiling = await bench_pgbench(url, duration, rep)
    _log("1a. baseline")
    base = [await bench_baseline(o)]
    _log("probe: bare asyncpg group commit (warm: ANALYZEd)")
    probe = await bench_probe(o, fresh=False)
    _log("2. durable calls over 1,000 objects")
    durable, durable_note = await bench_durable(o)
    _log("probe on freshly created tables")
    probe_fresh = await bench_probe(o, fresh=True)
    _log("2f. durable calls on freshly created tables")
    fresh, fresh_note = await bench_durable(o, fresh=True)
    _log("1b. baseline again")
    base.append(await bench_baseline(o))
    for label, run in zip("ab", base, strict=True):
        _add_baseline(rep, label, run, o.pool)
    base_rate = _add_durable(rep, durable, base)
    _add_probe(rep, "warm", probe, durable)
    _add_probe(rep, "fresh", probe_fresh, fresh)
    rep.notes += [durable_note, fresh_note, _probe_note(probe, probe_fresh)]
    _log("3. durable calls on one hot object")
    hot = await bench_hot(o, rep)
    _log("4. read-only calls")
    ro_many, ro_one = await bench_readonly(o, rep)
    _log(f"5. thaw ({thaw_stored:,} stored objects)")
    thaw_p99 = await bench_thaw(url, thaw_stored, thaw_samples, rep)
    _log(f"6. memory ({mem_n:,} objects, in a fresh process)")
    memory = await bench_memory(url, mem_n, args.loop, rep)
    regressions = _against_recorded(quick, {
        "2. durable / baseline": durable.rate / base_rate,
        "3. hot object / baseline": hot.rate / base_rate,
        "4. read-only, 64 callers / baseline": ro_many.rate / base_rate,
        "4. read-only, 1 caller / baseline": ro_one.rate / base_rate,
        "5. thaw p99 (ms, lower is better)": thaw_p99,
        "6. bytes per idle object (lower is better)": memory,
    })
    if ceiling.single_tps:
        rep.notes.append(
            f"ratios to pgbench 1-row tx/s: baseline {base[0].rate / ceiling.single_tps:.2f}, "
            f"durable {durable.rate / ceiling.single_tps:.2f}."
        )
    if ceiling.batched_rows:
        rep.notes.append(f"ratio of durable calls/s to pgbench's best batched rows/s: "
                         f"{durable.rate / ceiling.batched_rows:.2f}.")
    print()
    print(table(rep.rows, ["figure", "value", "p50", "p99", "target", ""]))
    print()
    for note in rep.notes:
        print("- " + note)
    print()
    print(regressions)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; "
          f"load average now {os.getloadavg()[0]:.2f}")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url",
                   default=os.environ.get("OBJECTS_BENCH_DATABASE_URL", DEFAULT_URL))
    p.add_argument("--duration", type=float, default=None,
                   help="seconds per throughput figure (default 5, or 2 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes (10,000 stored objects for the thaw figure)")
    p.add_argument("--baseline-pool", type=int, default=32,
                   help="connection pool size of the baseline (default 32)")
    p.add_argument("--no-analyze", action="store_true",
                   help="skip ANALYZE after creating the rows (cold planner statistics)")
    p.add_argument("--metrics", action="store_true",
                   help="count every call for Prometheus (runtime.metrics(); the prometheus "
                        "extra), to measure what metrics cost")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                   help="event loop (default uvloop, as uvicorn uses when it is installed)")
    p.add_argument("--memory-part", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args()


if __name__ == "__main__":
    ns = _parse()
    if ns.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            ns.loop = "asyncio"
        else:
            uvloop.run(main(ns))
            raise SystemExit(0)
    asyncio.run(main(ns))
