"""Issue 3 figures: HTTP throughput through uvicorn and websocket fan-out latency.

    python benchmarks/bench_http.py [--database-url URL] [--duration 10] [--clients 1000]

Starts the app in benchmarks/_http_app.py under uvicorn (one worker) on PostgreSQL, drives it
with wrk (a separate process, 64 connections, keys spread over 1,000 objects) against
(a) an endpoint that touches no object and no database and (b) the SQLAlchemy baseline
(a session per request doing UPDATE ... RETURNING), then attaches N websocket clients (a
separate process) to one object and makes one durable broadcast every 10 ms, measuring
delivery latency to every client.
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
import httpx

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
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
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=os.environ.get(
        "OBJECTS_TEST_DATABASE_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test"))
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(prepare(args.database_url, schema))
    port = free_port()
    env = dict(os.environ, BENCH_DATABASE_URL=args.database_url, BENCH_SCHEMA=schema,
               PYTHONPATH=str(HERE))
    server = subprocess.Popen(
        [PYTHON, "-m", "uvicorn", "_http_app:app", "--port", str(port), "--workers", "1",
         "--no-access-log", "--log-level", "warning"], env=env,
    )
    try:
        for _ in range(100):
            try:
                httpx.post(f"http://127.0.0.1:{port}/plain/x/increment").raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        wrk(port, "/counters/k", 2)  # warm up: thaw the 1,000 objects
        results = {
            "(a) no object, no database": wrk(port, "/plain/k", args.duration),
            "(c) no object, but waits ~1 ms on a future": wrk(port, "/suspend/k", args.duration),
            "(b) SQLAlchemy UPDATE..RETURNING": wrk(port, "/baseline/k", args.duration),
            "objects: POST /counters/{key}/increment": wrk(port, "/counters/k", args.duration),
        }
        fan = fanout(port, args.clients, max(args.duration, 5))
    finally:
        server.terminate()
        server.wait()
        asyncio.run(drop(args.database_url, schema))

    print(f"\nHTTP, uvicorn 1 worker, wrk -t1 -c64, {args.duration}s each, 1,000 keys, PostgreSQL")
    print(f"{'endpoint':44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, r in results.items():
        print(f"{name:44} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['non2xx']:>8}")
    plain = results["(a) no object, no database"]["rps"]
    base = results["(b) SQLAlchemy UPDATE..RETURNING"]["rps"]
    objs = results["objects: POST /counters/{key}/increment"]["rps"]
    wait = results["(c) no object, but waits ~1 ms on a future"]["rps"]
    print(f"(c) / (a) = {wait / plain:.0%}: what waiting alone costs through this stack")
    print(f"objects / (a) = {objs / plain:.0%} (target >= 60%): "
          f"{'PASS' if objs >= 0.6 * plain else 'MISS'}")
    print(f"objects / (b) = {objs / base:.1f}x (target >= 3x): "
          f"{'PASS' if objs >= 3 * base else 'MISS'}")
    print(f"\nFan-out: {fan['clients']} clients on one object, one durable broadcast / 10 ms, "
          f"{fan['sent']} sent")
    print(f"frames received {fan['frames']} (per client {fan['min_per_client']}.."
          f"{fan['max_per_client']}), latency p50 {fan['p50_ms']:.1f} ms, "
          f"p99 {fan['p99_ms']:.1f} ms, max {fan['max_ms']:.1f} ms "
          f"(target p99 <= 100 ms): {'PASS' if fan['p99_ms'] <= 100 else 'MISS'}")


if __name__ == "__main__":
    main()
