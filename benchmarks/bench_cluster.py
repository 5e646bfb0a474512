"""Figures of the clustered runtime (issue 9), all measured in one run.

    python benchmarks/bench_cluster.py [--database-url URL] [--quick] [--only PART,...]

Parts: failover (kill -9 of the owner), forward (a forwarded call against a local one),
scale (1,000 objects over 3 nodes against 1 node), liveness (database writes of idle nodes),
thaw (a thaw storm on PostgreSQL and SQLite). Each part uses its own fresh schema (or SQLite
file), removed at the end. Nodes are real: uvicorn processes serving the example app
(tests/_nodes.py), or Runtimes in this process. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests._nodes and the example app

import aiosqlite  # noqa: E402
import asyncpg  # noqa: E402
import httpx2  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from _common import (  # noqa: E402  # the script's folder is on sys.path
    Run,
    asyncpg_dsn,
    closed_loop,
    drop_schema,
    fresh_schema_name,
    pg_settings,
    revision,
    table,
)
from pydantic import BaseModel  # noqa: E402

from example_app.objects import Counter as AppCounter  # noqa: E402
from fastapi_objects import DurableObject, Runtime, readonly  # noqa: E402
from fastapi_objects.storage import open_storage  # noqa: E402
from tests._nodes import Cluster  # noqa: E402

DEFAULT_URL = "postgresql+asyncpg://root@127.0.0.1:5432/test"
PARTS = ("failover", "forward", "scale", "liveness", "thaw")


class IdleState(BaseModel):
    value: int = 0


class Idle(DurableObject[IdleState]):
    """An object that stays active for the whole run (nothing hibernates while measured)."""

    type_name = "bench_idle"
    idle_timeout = 3600.0

    async def increment(self, by: int = 1) -> int:
        self.state.value += by
        return self.state.value

    @readonly
    async def get(self) -> int:
        return self.state.value


@dataclass
class Report:
    """Rows of the final table (each figure with its baseline) and notes printed under it."""

    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, figure: str, value: str, baseline: str, ratio: str, target: str,
            ok: bool | None) -> None:
        verdict = "" if ok is None else ("PASS" if ok else "MISS")
        self.rows.append([figure, value, baseline, ratio, target, verdict])


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _ms(seconds_ms: float) -> str:
    return f"{seconds_ms * 1000:.0f} us" if seconds_ms < 0.1 else f"{seconds_ms:.2f} ms"


async def _create_tables(url: str, schema: str | None) -> None:
    storage = open_storage(url, schema=schema)
    try:
        await storage.create_tables()
    finally:
        await storage.close()


def _engine(rt: Runtime) -> Any:
    """What holds the runtime's committer and thawer (its ``Host``, in this version)."""
    return getattr(rt, "_host", rt)


def _env(url: str, schema: str) -> dict[str, str]:
    return dict(os.environ, OBJECTS_DATABASE_URL=url, OBJECTS_SCHEMA=schema)


@contextlib.asynccontextmanager
async def _schema(url: str, part: str) -> Any:
    """A fresh schema with the storage tables, dropped afterwards."""
    schema = fresh_schema_name(part)
    try:
        await _create_tables(url, schema)
        yield schema
    finally:
        await drop_schema(url, schema)


# -- 1. failover after kill -9 ----------------------------------------------------------------


async def _heartbeat_age(url: str, schema: str, node_id: str) -> float:
    """Seconds since ``node_id``'s last heartbeat, by the database's clock."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        age = await conn.fetchval(
            "SELECT extract(epoch FROM clock_timestamp() - heartbeat_at) "
            f'FROM "{schema}".objects_nodes WHERE node_id = $1', node_id,
        )
    finally:
        await conn.close()
    return float(age)


@dataclass
class Failover:
    """What callers saw around a ``kill -9`` of the owner (times by this process's clock)."""

    killed: float
    answered: list[tuple[str, float, float]]  # (node called, sent, answered) of each success
    failed: list[tuple[str, float, str]]  # (node called, failed at, why) of each failure
    heartbeat_age: float  # n1's heartbeat age at the kill, by the database's clock
    log: str  # n2's stderr

    def first_after_kill(self) -> float | None:
        """When the first call sent after the kill was answered (``None``: none was)."""
        after = [done for _, sent, done in self.answered if sent >= self.killed]
        return min(after) if after else None


async def run_failover(
    url: str, ttl: float, callers: int, entry: tuple[str, ...] = ("n2",), *,
    settle: float = 0.0,
) -> Failover:
    """Kill n1, the owner of a hot object, with SIGKILL while callers use it through ``entry``.

    ``callers`` sequential callers per node of ``entry`` call ``POST /counters/fo/increment``
    there (n2 forwards to n1). It stops once a call sent after the kill was answered, and
    ``settle`` seconds more, or ``ttl + 20`` seconds after the kill.
    """
    async with _schema(url, "failover") as schema, \
            Cluster(_env(url, schema), ["n1", "n2"], ttl=ttl) as cluster:
        assert (await cluster.post("n1", "/counters/fo/increment")).status_code == 200
        answered: list[tuple[str, float, float]] = []
        failed: list[tuple[str, float, str]] = []
        stop = asyncio.Event()
        async with httpx2.AsyncClient(timeout=ttl + 60) as http:

            async def caller(node: str) -> None:
                target = cluster[node].url + "/counters/fo/increment"
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        response = await http.post(target)
                    except httpx2.HTTPError as exc:
                        failed.append((node, time.monotonic(), type(exc).__name__))
                        await asyncio.sleep(0.01)
                        continue
                    if response.status_code == 200:
                        answered.append((node, sent, time.monotonic()))
                    else:
                        failed.append((node, time.monotonic(),
                                       f"{response.status_code} {response.text[:80]}"))
                        await asyncio.sleep(0.01)

            tasks = [asyncio.create_task(caller(node)) for node in entry for _ in range(callers)]
            await asyncio.sleep(1.0)  # forwarding in steady state
            age = await _heartbeat_age(url, schema, "n1")
            cluster["n1"].signal(signal.SIGKILL)
            run = Failover(time.monotonic(), answered, failed, age, "")
            deadline = run.killed + ttl + 20
            first: float | None = None
            while first is None and time.monotonic() < deadline:
                first = run.first_after_kill()
                await asyncio.sleep(0.005)
            await asyncio.sleep(settle)
            stop.set()
            await asyncio.gather(*tasks)
        run.log = cluster["n2"].stderr()
    return run


async def bench_failover(url: str, ttl: float, callers: int, rep: Report) -> None:
    """Kill the owner of a hot object with SIGKILL while callers on another node use it.

    The callers (``callers`` of them, each sequential) call ``POST /counters/fo/increment`` on
    n2, which forwards to n1, the owner. The figure is the time from the kill to the first
    successful answer to a call sent after it. Both nodes run on this machine, so n2 proves
    n1 dead (its process is gone) and the floor is 0; were they on two machines, it would be
    when the database lets another node claim: ``node_ttl`` after n1's last heartbeat (read
    just before the kill).
    """
    run = await run_failover(url, ttl, callers)
    killed, age, log = run.killed, run.heartbeat_age, run.log
    before = sum(1 for _, sent, _ in run.answered if sent < killed)
    failed = [why for _, _, why in run.failed]
    first = run.first_after_kill()
    proven = "(proven by this node)" in log  # n2's takeover line says how it knew
    floor = 0.0 if proven else max(ttl - age, 0.0)
    for failure in failed:  # an internal error names an id that is in the node's log
        found = re.search(r"internal error ([0-9a-f]+)", failure)
        if found and found.group(1) in log:
            at = log.index(found.group(1))
            rep.notes.append(f"1: n2's log for internal error {found.group(1)}: "
                             + log[max(0, at - 200):at + 2500])
    if first is None:
        rep.add(f"1. failover after kill -9 (node_ttl {ttl:g} s)", "no answer within "
                f"{ttl + 20:g} s", f"{floor:.2f} s", "", f"<= {ttl + 1:g} s", False)
        return
    gap = first - killed
    rep.add(f"1. failover after kill -9 (node_ttl {ttl:g} s)", f"{gap:.2f} s",
            f"{floor:.2f} s (takeover allowed{', proven dead' if proven else ''})",
            f"+{gap - floor:.2f} s", f"<= {ttl + 1:g} s", gap <= ttl + 1)
    allowed = (
        "n2 proved n1 dead (same machine: its process was gone), so it could claim at once"
        if proven else f"the database let n2 claim {floor:.2f} s after it (the baseline)"
    )
    rep.notes.append(
        f"1 (node_ttl {ttl:g} s): {callers} sequential callers on n2, forwarded to n1, "
        f"{before:,} answers before the kill; n1's heartbeat was {age:.2f} s old at the kill; "
        f"{allowed}; the first call sent after the kill was answered {gap:.2f} s after it. "
        f"{len(failed)} calls failed ({', '.join(sorted(set(failed))[:3]) or 'none'}): those "
        "in flight at the kill."
    )


# -- 2. a forwarded call against a local one --------------------------------------------------


async def bench_forward(url: str, duration: float, warmup: float, callers: int,
                        rep: Report) -> None:
    """Calls from this process's node ``m``: on objects it owns, and on objects that ``x``
    (a uvicorn process of the example app) owns, which ``m`` forwards to ``x`` on loopback."""
    keys = 100
    async with _schema(url, "forward") as schema, Cluster(_env(url, schema), ["x"]) as cluster:
        async with httpx2.AsyncClient(base_url=cluster["x"].url) as http:
            for i in range(keys):  # x owns r0..r99
                assert (await http.post(f"/counters/r{i}/increment")).status_code == 200
        async with Runtime(objects=[AppCounter], database_url=url, schema=schema,
                           node_id="m") as rt:
            for i in range(keys):  # m owns l0..l99
                await rt.get(AppCounter, f"l{i}").increment()
            await rt.get(AppCounter, "r0").get()
            forwarded0 = rt.stats().forwarded
            rnd = random.Random(4).randrange

            def on(prefix: str, method: str) -> Callable[[int], Awaitable[Any]]:
                def call(_: int) -> Awaitable[Any]:
                    handle = rt.get(AppCounter, f"{prefix}{rnd(keys)}")
                    return handle.get() if method == "get" else handle.increment()
                return call

            runs: dict[tuple[str, str, int], Run] = {}
            for method in ("get", "increment"):
                for n in (1, callers):
                    for where, prefix in (("local", "l"), ("forwarded", "r"), ):
                        runs[(method, where, n)] = await closed_loop(
                            n, duration, on(prefix, method), warmup=warmup)
            forwarded = rt.stats().forwarded - forwarded0
            active_here = rt.stats().active
    expected = sum(r.calls for (_, where, _), r in runs.items() if where == "forwarded")
    if forwarded < expected or active_here != keys:
        raise SystemExit(f"forward: {forwarded} forwarded (expected >= {expected}), "
                         f"{active_here} active on m (expected {keys})")
    for method, label in (("get", "read-only get()"), ("increment", "durable increment()")):
        local, remote = runs[(method, "local", 1)], runs[(method, "forwarded", 1)]
        added50 = remote.pct_ms(50) - local.pct_ms(50)
        added99 = remote.pct_ms(99) - local.pct_ms(99)
        rep.add(f"2. forwarded {label}, 1 caller: added p50 / p99",
                f"+{_ms(added50)} / +{_ms(added99)}",
                f"local p50 {_ms(local.pct_ms(50))} / p99 {_ms(local.pct_ms(99))}",
                f"{remote.pct_ms(50) / local.pct_ms(50):.1f}x p50", "p50 added <= 1 ms",
                added50 <= 1.0)
        local, remote = runs[(method, "local", callers)], runs[(method, "forwarded", callers)]
        rep.add(f"2. forwarded {label}, {callers} callers", f"{remote.rate:,.0f} calls/s",
                f"local {local.rate:,.0f} calls/s", f"{remote.rate / local.rate:.2f}",
                "(context)", None)
    rep.notes.append(
        f"2: node m is a Runtime in this process, node x a uvicorn process of the example app "
        f"(uvloop, httptools) on the same PostgreSQL schema. Each call goes to one of {keys} "
        f"objects m owns (local) or x owns (forwarded by m over its call channel to x's internal "
        f"listener on 127.0.0.1); the example Counter's increment() also broadcasts. "
        f"m forwarded {forwarded:,} calls; {duration:g} s per run after {warmup:g} s of "
        "warm-up. Forwarded calls use the other core for x's half of the work: with "
        "concurrency they are not only a cost."
    )


# -- 3. 1,000 objects over 3 nodes against 1 node ---------------------------------------------

WRK_LUA = """
math.randomseed({seed})
wrk.method = "POST"
request = function()
  return wrk.format(nil, "/counters/k" .. math.random(0, 999) .. "/increment")
end
"""


async def _wrk(url: str, connections: int, duration: float, seed: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA.replace("{seed}", str(seed)))
    try:
        proc = await asyncio.create_subprocess_exec(
            "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
            "-s", f.name, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out_b, err = await proc.communicate()
    finally:
        os.unlink(f.name)
    out = out_b.decode()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if proc.returncode != 0 or rps is None:
        raise SystemExit(f"wrk failed: {out[-500:]} {err.decode()[-500:]}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(rps.group(1)), "p50": _wrk_ms(out, "50"), "p99": _wrk_ms(out, "99"),
            "errors": int(errors.group(1)) if errors else 0}


def _wrk_ms(out: str, q: str) -> float:
    found = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)\b", out)
    if found is None:
        return float("nan")
    return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]


async def _spread(cluster: Cluster, names: list[str], objects: int) -> None:
    """Activate k0..k{objects-1}, key i on node ``names[i % len(names)]`` (64 at a time)."""
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with sem:
            name = names[i % len(names)]
            response = await cluster.post(name, f"/counters/k{i}/increment")
            assert response.status_code == 200, response.text

    await asyncio.gather(*(one(i) for i in range(objects)))


async def bench_scale(url: str, duration: float, rep: Report) -> None:
    """wrk against one node, then three wrk processes against three nodes at once."""
    if shutil.which("wrk") is None:
        rep.notes.append("3: skipped, wrk is not installed (apt-get install wrk)")
        return
    results: dict[int, list[dict[str, float]]] = {}
    for n in (1, 3):
        names = [f"s{i}" for i in range(1, n + 1)]
        async with _schema(url, f"scale{n}") as schema, Cluster(_env(url, schema), names) as cl:
            await _spread(cl, names, 1_000)
            shares = [64 // n + (1 if i < 64 % n else 0) for i in range(n)]
            results[n] = list(await asyncio.gather(*(
                _wrk(cl[name].url, c, duration, seed=i + 1)
                for i, (name, c) in enumerate(zip(names, shares, strict=True))
            )))
    one = results[1][0]
    three = sum(r["rps"] for r in results[3])
    errors = sum(r["errors"] for rs in results.values() for r in rs)
    ratio = three / one["rps"]
    p50 = sorted(r["p50"] for r in results[3])[1]
    p99 = max(r["p99"] for r in results[3])
    rep.add("3. 1,000 objects over 3 nodes, 64 connections", f"{three:,.0f} calls/s",
            f"1 node: {one['rps']:,.0f} calls/s", f"{ratio:.2f}", ">= 0.5 (no collapse)",
            ratio >= 0.5 and errors == 0)
    rep.notes.append(
        f"3: uvicorn nodes of the example app; wrk -t1 sends POST /counters/k<random 0-999>"
        f"/increment (a durable call that also broadcasts). 1 node: one wrk, 64 connections "
        f"(p50 {one['p50']:.2f} ms, p99 {one['p99']:.2f} ms). 3 nodes: each node owns a third "
        f"of the objects and gets its own wrk (22+21+21 connections), so two calls in three "
        f"are forwarded (p50 {p50:.2f} ms, worst p99 {p99:.2f} ms). {duration:g} s each; "
        f"{errors} non-2xx answers. On 2 cores, three nodes, their wrk and PostgreSQL share "
        "the same CPUs: no speed-up is possible, the figure shows what forwarding costs."
    )


# -- 4. liveness writes ------------------------------------------------------------------------


async def _table_writes(url: str, schema: str) -> dict[str, int]:
    """Rows inserted + updated + deleted so far, per table of ``schema`` (pg_stat_user_tables)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del AS w FROM pg_stat_user_tables "
            "WHERE schemaname = $1", schema,
        )
    finally:
        await conn.close()
    return {r["relname"]: int(r["w"]) for r in rows}


async def _settle(url: str, schema: str, inserted: dict[str, int]) -> None:
    """Wait until the statistics show ``inserted`` rows per table and then stop moving.

    A backend reports its counters when it next runs a transaction a second after its last
    report, or after 10 s idle: without this wait, the activation's own writes would land
    in the idle window.
    """
    last: dict[str, tuple[int, ...]] | None = None
    for _ in range(60):
        await asyncio.sleep(0.5)
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            rows = await conn.fetch(
                "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables "
                "WHERE schemaname = $1", schema,
            )
        finally:
            await conn.close()
        now = {r["relname"]: tuple(r[1:]) for r in rows if r["relname"] != "objects_nodes"}
        if now == last and all(now.get(t, (0,))[0] >= n for t, n in inserted.items()):
            return
        last = now
    raise SystemExit(f"liveness: the statistics never showed {inserted} inserts")


async def _writes_over(url: str, schema: str, seconds: float) -> dict[str, int]:
    before = await _table_writes(url, schema)
    await asyncio.sleep(seconds)
    after = await _table_writes(url, schema)
    return {t: after[t] - before.get(t, 0) for t in after if after[t] != before.get(t, 0)}


async def bench_liveness(url: str, window: float, objects: int, rep: Report) -> None:
    """Three idle nodes (default node_ttl): table writes over ``window`` s, 0 then N objects."""
    nodes = 3
    async with _schema(url, "liveness") as schema, contextlib.AsyncExitStack() as stack:
        runtimes = [
            await stack.enter_async_context(
                Runtime(objects=[Idle], database_url=url, schema=schema, node_id=f"l{i}"))
            for i in range(nodes)
        ]
        ttl = runtimes[0].settings.node_ttl
        await _settle(url, schema, {})
        empty = await _writes_over(url, schema, window)
        sem = asyncio.Semaphore(64)

        async def activate(i: int) -> None:
            async with sem:
                await runtimes[i % nodes].get(Idle, f"i{i}").increment()

        await asyncio.gather(*(activate(i) for i in range(objects)))
        for rt in runtimes:
            await _engine(rt).committer.drain()
        active = sum(rt.stats().active for rt in runtimes)
        await _settle(url, schema, {"objects_checkpoints": objects, "objects_owners": objects})
        held = await _writes_over(url, schema, window)
        still = sum(rt.stats().active for rt in runtimes)
    if active != objects or still != objects:
        raise SystemExit(f"liveness: {active} then {still} active objects, expected {objects}")
    rate0, rate = sum(empty.values()) / window, sum(held.values()) / window
    expected = nodes * 3 / ttl
    rep.add(f"4. liveness writes, {nodes} idle nodes holding {objects:,} active objects",
            f"{rate:.2f} writes/s", f"0 objects: {rate0:.2f} writes/s",
            f"{rate / rate0:.2f}" if rate0 else "-", "<= 5/s, same as 0 objects",
            rate <= 5 and rate <= rate0 + 0.5)
    rep.notes.append(
        f"4: {nodes} Runtimes in this process (node_ttl {ttl:g} s: a heartbeat every "
        f"{ttl / 3:.1f} s each, {expected:.2f} writes/s expected). Writes are pg_stat_user_tables "
        f"n_tup_ins + n_tup_upd + n_tup_del of the schema's tables over {window:g} s of "
        f"idleness: with 0 objects {_per_table(empty)}; then {objects:,} objects activated "
        f"(an increment each) and, once their writes had settled, {_per_table(held)}."
    )


def _per_table(writes: dict[str, int]) -> str:
    return ", ".join(f"{t} {w}" for t, w in sorted(writes.items())) or "no writes"


# -- 5. thaw storm -----------------------------------------------------------------------------


class Stored(DurableObject[IdleState]):
    """A stored, hibernated object (the thaw storm calls each once)."""

    type_name = "bench_stored"
    idle_timeout = 3600.0

    @readonly
    async def get(self) -> int:
        return self.state.value


async def _fill(url: str, schema: str | None, n: int) -> None:
    """``n`` hibernated Stored checkpoints and their released owner rows."""
    storage = open_storage(url, schema=schema)
    await storage.create_tables()
    now = datetime.now(UTC)
    prefix = f"{schema}." if schema else ""
    tables = storage.metadata.tables  # type: ignore[attr-defined]
    try:
        async with storage.engine.begin() as conn:  # type: ignore[attr-defined]
            await conn.execute(sa.insert(tables[prefix + "objects_checkpoints"]), [
                {"type": Stored.type_name, "key": f"s{i}", "rev": 1, "journal_rev": 0,
                 "snapshot_rev": 0, "state": {"value": i}, "state_version": 1,
                 "status": "hibernated", "metadata": {}, "created_at": now, "updated_at": now}
                for i in range(n)
            ])
            # Released by the node that held them (a graceful stop), as after a deploy.
            await conn.execute(sa.insert(tables[prefix + "objects_owners"]), [
                {"type": Stored.type_name, "key": f"s{i}", "node_id": None, "epoch": 1,
                 "claimed_at": now}
                for i in range(n)
            ])
    finally:
        await storage.close()


async def _bare_pg(url: str, schema: str, keys: list[str]) -> float:
    """Seconds for one SELECT per key, one after another, on one asyncpg connection."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    sql = (f'SELECT state, rev FROM "{schema}".objects_checkpoints '
           "WHERE type = $1 AND key = $2")
    try:
        t0 = time.perf_counter()
        for key in keys:
            row = await conn.fetchrow(sql, Stored.type_name, key)
            assert row is not None
        return time.perf_counter() - t0
    finally:
        await conn.close()


async def _bare_pg_pool(url: str, schema: str, keys: list[str], callers: int) -> float:
    """The same SELECTs from ``callers`` tasks over a pool of 10 (the runtime's pool size)."""
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=10, max_size=10)
    sql = (f'SELECT state, rev FROM "{schema}".objects_checkpoints '
           "WHERE type = $1 AND key = $2")
    it = iter(keys)

    async def caller() -> None:
        for key in it:
            assert await pool.fetchrow(sql, Stored.type_name, key) is not None

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return time.perf_counter() - t0
    finally:
        await pool.close()


async def _bare_sqlite(path: str, keys: list[str]) -> float:
    """Seconds for one SELECT per key, one after another, through aiosqlite."""
    async with aiosqlite.connect(path) as db:
        sql = "SELECT state, rev FROM objects_checkpoints WHERE type = ? AND key = ?"
        t0 = time.perf_counter()
        for key in keys:
            async with db.execute(sql, (Stored.type_name, key)) as cursor:
                assert await cursor.fetchone() is not None
        return time.perf_counter() - t0


async def _storm(url: str, schema: str | None, keys: list[str], callers: int) -> tuple[float, Any]:
    """A fresh runtime on the stored data: ``callers`` tasks call every key once."""
    async with Runtime(objects=[Stored], database_url=url, schema=schema,
                       node_id="storm") as rt:
        it: Iterator[str] = iter(keys)

        async def caller() -> None:
            for key in it:
                await rt.get(Stored, key).get()

        cpu0 = os.times()
        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        seconds = time.perf_counter() - t0
        cpu1 = os.times()
        stats = rt.stats()
        batches = _engine(rt).thawer.batches
    if stats.thaws != len(keys):
        raise SystemExit(f"thaw storm: {stats.thaws} thaws, expected {len(keys)}")
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / len(keys) * 1e6
    return seconds, (batches, cpu)


async def bench_thaw_storm(url: str, n: int, callers: int, rep: Report) -> None:
    keys = [f"s{i}" for i in range(n)]
    random.Random(5).shuffle(keys)
    async with _schema(url, "thaw") as schema:
        await _fill(url, schema, n)
        conn = await asyncpg.connect(asyncpg_dsn(url))
        await conn.execute(f'VACUUM ANALYZE "{schema}".objects_checkpoints, '
                           f'"{schema}".objects_owners')
        await conn.close()
        bare = [await _bare_pg(url, schema, keys)]
        pooled = await _bare_pg_pool(url, schema, keys, callers)
        seconds, (batches, cpu) = await _storm(url, schema, keys, callers)
        bare.append(await _bare_pg(url, schema, keys))
    _add_storm(rep, "PostgreSQL", n, callers, seconds, bare, batches, cpu)
    rep.add("   (context: the same SELECTs from 64 callers over an asyncpg pool of 10)",
            f"{n / pooled:,.0f} SELECTs/s", "", "", "", None)

    with tempfile.TemporaryDirectory(prefix="bench-thaw-") as tmp:
        path = os.path.join(tmp, "objects.db")
        sqlite_url = f"sqlite+aiosqlite:///{path}"
        await _fill(sqlite_url, None, n)
        bare = [await _bare_sqlite(path, keys)]
        seconds, (batches, cpu) = await _storm(sqlite_url, None, keys, callers)
        bare.append(await _bare_sqlite(path, keys))
    _add_storm(rep, "SQLite", n, callers, seconds, bare, batches, cpu)
    rep.notes.append(
        f"5: {n:,} hibernated checkpoints (a tiny state each) released by their last owner; a "
        f"fresh runtime; {callers} callers take the keys (shuffled) from one iterator and call "
        "a read-only get() on each: every call is a thaw (claim, load, validate, activate). "
        "The bare loop is one SELECT of the checkpoint per key, awaited one after another on "
        "one connection of the same driver (asyncpg; aiosqlite), run before and after the "
        "storm (the ratio uses their mean)."
    )


def _add_storm(rep: Report, label: str, n: int, callers: int, seconds: float,
               bare: list[float], batches: int, cpu: float) -> None:
    rate = n / seconds
    base = n / (sum(bare) / len(bare))
    rep.add(f"5. thaw storm, {label}: {n:,} stored objects, {callers} callers",
            f"{rate:,.0f} activations/s", f"bare loop {base:,.0f} SELECTs/s",
            f"{rate / base:.1f}x", ">= 1x bare loop (3x stretch)", rate >= base)
    rep.notes.append(f"5 ({label}): {batches} claim+load batches, {cpu:.0f} us of this "
                     "process's CPU per activation (issue 13's target: <= 30 us, PostgreSQL): "
                     f"{'PASS' if cpu <= 30 else 'MISS'}.")


# -- driver ------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    url = args.database_url
    quick = args.quick
    only = set(args.only.split(",")) if args.only else set(PARTS)
    unknown = only - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}; known: {', '.join(PARTS)}")
    duration = 1.5 if quick else 4.0
    warmup = 0.5 if quick else 1.0
    settings = await pg_settings(url, ["fsync", "synchronous_commit"])
    print(f"bench_cluster: {url}  PostgreSQL {settings['server_version']}  "
          f"fsync={settings['fsync']}  synchronous_commit={settings['synchronous_commit']}")
    print(f"fastapi_objects at {revision()}; Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n")
    started = time.perf_counter()
    rep = Report()
    if "failover" in only:
        for ttl in args.ttl:
            _log(f"1. failover after kill -9, node_ttl {ttl:g} s")
            await bench_failover(url, ttl, 8, rep)
    if "forward" in only:
        _log("2. forwarded against local calls")
        await bench_forward(url, duration, warmup, 16, rep)
    if "scale" in only:
        _log("3. 1,000 objects over 3 nodes against 1 node")
        await bench_scale(url, 3.0 if quick else 8.0, rep)
    if "liveness" in only:
        _log("4. liveness writes of idle nodes")
        await bench_liveness(url, 10.0 if quick else 30.0, 10_000, rep)
    if "thaw" in only:
        _log("5. thaw storm")
        await bench_thaw_storm(url, 10_000, 64, rep)
    print()
    print(table(rep.rows, ["figure", "value", "baseline (same run)", "ratio", "target", ""]))
    print()
    for note in rep.notes:
        print("- " + note)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; "
          f"load average now {os.getloadavg()[0]:.2f}")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url",
                   default=os.environ.get("OBJECTS_BENCH_DATABASE_URL", DEFAULT_URL))
    p.add_argument("--quick", action="store_true",
                   help="shorter runs (about 2 minutes instead of 4)")
    p.add_argument("--ttl", type=lambda s: [float(x) for x in s.split(",")], default=[2.0, 10.0],
                   help="node_ttl values for the failover figure (default 2,10)")
    p.add_argument("--only", default="", help=f"comma-separated parts: {', '.join(PARTS)}")
    return p.parse_args()


if __name__ == "__main__":
    ns = _parse()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(ns))
    else:
        uvloop.run(main(ns))
