"""HTTP throughput through uvicorn and websocket fan-out latency, on every backend.

    python benchmarks/bench_http.py [--backends memory,postgres,sqlite] [--duration 10]
                                    [--clients 3000] [--gc-freeze | --gc-off]

Starts the app in benchmarks/_http_app.py under uvicorn (one worker) and drives it with wrk
(a separate process, 64 connections, keys spread over 1,000 objects) against, in the same run:
(a) an endpoint that touches no object and no database; (m) the README's route shape on an
in-memory object (a ``Depends`` keyed by the path, a ``by`` query parameter, the same JSON
answer): what FastAPI itself costs; (b) the SQLAlchemy baseline (a session per request doing
UPDATE ... RETURNING; none on memory://); and the README's counter route through
``Depends(get_object(Counter))``. The route's ladder prints the server's CPU per request as one
layer at a time is added, and what of it the cyclic GC took (timed in the server).
Then N websocket clients (a separate process) attach to one object and the script makes one
durable broadcast every 10 ms, measuring delivery latency to every client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx2

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
ROUNDS = 3  # alternating rounds of (m) and the objects route
# The route's ladder: one layer at a time, from the in-memory route to the README's route.
LADDER = [
    ("(m) in-memory object", "/memory/k"),
    ("+ suspended on a future (released every 1 ms)", "/suspend/k"),
    ("+ Depends(get_object) and a read-only call", "/readonly/k"),
    ("+ a durable call (turn, commit)", "/quiet/k"),
    ("+ its broadcast: the README's route", "/counters/k"),
]
LUA = """
wrk.method = "POST"
request = function()
  return wrk.format(nil, "{path}" .. math.random(0, 999) .. "/increment")
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int) -> None:
    """Wait for the benchmark app on ``port`` to answer (30 s at most)."""
    for _ in range(300):
        try:
            httpx2.post(f"http://127.0.0.1:{port}/plain/x/increment").raise_for_status()
            return
        except httpx2.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"the app on port {port} did not start")


def wrk(port: int, path: str, duration: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA.replace("{path}", path))
    out = subprocess.run(
        ["wrk", "-t1", "-c64", f"-d{duration}s", "--latency", "-s", f.name,
         f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    ).stdout
    os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "non2xx": int(errors.group(1)) if errors else 0}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def prepare(url: str, schema: str) -> None:
    if url.startswith("memory"):
        return
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.split("///", 1)[1]) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE baseline_counters (key text PRIMARY KEY, value int NOT NULL)")
            db.executemany("INSERT INTO baseline_counters VALUES (?, 0)",
                           [(f"k{i}",) for i in range(1000)])
        return
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.execute(
        f'CREATE TABLE "{schema}".baseline_counters (key text PRIMARY KEY, value bigint NOT NULL)'
    )
    await conn.execute(
        f'INSERT INTO "{schema}".baseline_counters '
        "SELECT 'k' || i, 0 FROM generate_series(0, 999) i"
    )
    await conn.close()


async def drop(url: str, schema: str) -> None:
    if not url.startswith("postgres"):
        return  # the temporary folder goes
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    await conn.close()


def fanout(port: int, clients: int, seconds: float) -> dict[str, float]:
    proc = subprocess.Popen(
        [PYTHON, str(HERE / "_ws_fanout.py"), "127.0.0.1", str(port),
         "/objects/ticker/hot/ws", str(clients), str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    json.loads(proc.stdout.readline())  # all attached
    sent = 0
    with httpx2.Client(base_url=f"http://127.0.0.1:{port}") as client:
        deadline = time.monotonic() + seconds - 1.0
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            client.post("/tickers/hot/tick", params={"t": repr(time.time())}).raise_for_status()
            sent += 1
            next_at += 0.010
            time.sleep(max(0.0, next_at - time.monotonic()))
    result = json.loads(proc.stdout.readline())
    proc.wait()
    result["sent"] = sent
    return result


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_stats(port: int) -> dict[str, float]:
    """The app's ``/stats``: commits, their transactions, the cyclic GC's collections so far."""
    return dict(httpx2.get(f"http://127.0.0.1:{port}/stats").json())


def cpu_per_request(
    pid: int, port: int, path: str, duration: int
) -> tuple[float, float, float, float]:
    """wrk on ``path``: requests/s, the server's CPU (all its threads) per request in us, the
    cyclic GC's share of it in us, and its full collections per 1,000 requests."""
    before, gc_before = cpu_seconds(pid), server_stats(port)
    result = wrk(port, path, duration)
    used, gc_after = cpu_seconds(pid) - before, server_stats(port)
    requests = result["rps"] * duration
    return (result["rps"], used / requests * 1e6,
            (gc_after["gc_seconds"] - gc_before["gc_seconds"]) / requests * 1e6,
            (gc_after["gc_full"] - gc_before["gc_full"]) / requests * 1000)


def run_backend(url: str, duration: int, clients: int, gc: str = "") -> dict[str, object]:
    """Serve the app on ``url`` and take every figure; return them.

    ``gc``: ``freeze`` or ``off`` (see _http_app.py), else the GC as Python sets it up.
    """
    schema = f"bench_{uuid.uuid4().hex[:8]}" if url.startswith("postgres") else ""
    asyncio.run(prepare(url, schema))
    port = free_port()
    env = dict(os.environ, BENCH_DATABASE_URL=url, BENCH_SCHEMA=schema, PYTHONPATH=str(HERE),
               BENCH_GC=gc)
    server = subprocess.Popen(
        [PYTHON, "-m", "uvicorn", "_http_app:app", "--port", str(port), "--workers", "1",
         "--no-access-log", "--log-level", "warning"], env=env,
    )
    try:
        wait_ready(port)
        wrk(port, "/counters/k", 2)  # warm up: thaw the 1,000 objects
        results: dict[str, object] = {"(a) no object, no database": wrk(port, "/plain/k", duration)}
        if not url.startswith("memory"):
            results["(b) SQLAlchemy UPDATE..RETURNING"] = wrk(port, "/baseline/k", duration)
        # The ratio that matters, objects / (m), from rounds that alternate the two: the
        # machine's load moves within a run, and a ratio of neighbours moves with it less.
        before = server_stats(port)
        rounds = [(wrk(port, "/memory/k", duration), wrk(port, "/counters/k", duration))
                  for _ in range(ROUNDS)]
        after = server_stats(port)
        results["batch"] = (after["commits"] - before["commits"]) / max(
            after["batches"] - before["batches"], 1)
        rounds.sort(key=lambda pair: pair[1]["rps"] / pair[0]["rps"])
        memory, objs = rounds[len(rounds) // 2]  # the round with the median ratio
        results["(m) the same route on an in-memory object"] = memory
        results["objects: POST /counters/{key}/increment"] = objs
        results["ratios"] = [pair[1]["rps"] / pair[0]["rps"] for pair in rounds]
        results["ladder"] = [
            (name, *cpu_per_request(server.pid, port, path, duration)) for name, path in LADDER
        ]
        if clients:
            results["fanout"] = fanout(port, clients, max(duration, 5))
    finally:
        server.terminate()
        server.wait()
        asyncio.run(drop(url, schema))
    return results


def report(backend: str, results: dict[str, object], duration: int) -> None:
    """Print one backend's figures with their ratios and targets."""
    print(f"\nHTTP on {backend}, uvicorn 1 worker, wrk -t1 -c64, {duration}s each, 1,000 keys")
    print(f"{'endpoint':44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    rps = {}
    for name, r in results.items():
        if name in ("fanout", "ratios", "batch", "ladder"):
            continue
        assert isinstance(r, dict)
        rps[name] = r["rps"]
        print(f"{name:44} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['non2xx']:>8}")
    memory = rps["(m) the same route on an in-memory object"]
    base = rps.get("(b) SQLAlchemy UPDATE..RETURNING")
    objs = rps["objects: POST /counters/{key}/increment"]
    ratios = results["ratios"]
    assert isinstance(ratios, list)
    print(f"objects / (m) in {len(ratios)} alternating rounds: "
          + ", ".join(f"{r:.2f}" for r in ratios) + " (the median round is shown above)")
    print(f"objects per commit transaction under this load: {results['batch']:.1f}")
    print(f"objects / (m) = {objs / memory:.2f} (target >= 0.6): "
          f"{'PASS' if objs >= 0.6 * memory else 'MISS'}")
    if base is not None:
        print(f"objects / (b) = {objs / base:.1f}x (target >= 3x): "
              f"{'PASS' if objs >= 3 * base else 'MISS'}")
    ladder = results["ladder"]
    assert isinstance(ladder, list)
    print("\nThe route's ladder: the server's CPU per request (both threads), one layer at a "
          "time;\nof it, the cyclic GC's time, and its full collections per 1,000 requests")
    print(f"  {'':48} {'req/s':>7} {'CPU/req':>8} {'adds':>6} {'GC/req':>7} {'full/1k':>8}")
    previous = None
    for name, rps, cpu, gc_us, full in ladder:
        added = "" if previous is None else f"{cpu - previous:+6.0f}"
        print(f"  {name:48} {rps:>7.0f} {cpu:>5.0f} us {added:>6} {gc_us:>4.0f} us {full:>8.2f}")
        previous = cpu
    fan = results.get("fanout")
    if isinstance(fan, dict):
        print(f"Fan-out: {fan['clients']} clients on one object, one durable broadcast / 10 ms, "
              f"{fan['sent']} sent; frames received {fan['frames']} (per client "
              f"{fan['min_per_client']}..{fan['max_per_client']}), latency p50 "
              f"{fan['p50_ms']:.1f} ms, p99 {fan['p99_ms']:.1f} ms, max {fan['max_ms']:.1f} ms "
              f"(target p99 <= 250 ms): {'PASS' if fan['p99_ms'] <= 250 else 'MISS'}")


def parser_for(doc: str | None) -> argparse.ArgumentParser:
    """A script's argument parser with ``--database-url`` (the PostgreSQL server)."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get(
        "OBJECTS_TEST_DATABASE_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test"),
        help="the PostgreSQL server (default OBJECTS_TEST_DATABASE_URL or the local one)")
    return parser


def main() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("--backends", default="memory,postgres,sqlite",
                        help="comma-separated: memory, postgres, sqlite (default all three)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--clients", type=int, default=3000,
                        help="websocket clients of the fan-out figure (0: skip it)")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="the app calls gc.freeze() once started (what an app may do; the "
                        "runtime leaves the GC alone): both routes of the ratio run so")
    parser.add_argument("--gc-off", action="store_true",
                        help="a diagnostic: the app calls gc.disable() once started (no cycle "
                        "is ever freed: not a way to run), to show what the GC costs each rung")
    args = parser.parse_args()
    gc = "freeze" if args.gc_freeze else "off" if args.gc_off else ""
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    print(f"load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix="bench_http_") as folder:
            url = {"sqlite": f"sqlite+aiosqlite:///{folder}/objects.db",
                   "memory": "memory://"}.get(backend, args.database_url)
            report(backend, run_backend(url, args.duration, args.clients, gc), args.duration)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
