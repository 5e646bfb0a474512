"""Websocket fan-out over several nodes: N clients spread evenly over K uvicorn nodes.

    python benchmarks/bench_fanout.py [--clients 10000] [--nodes 3] [--interval 0.01]

Starts K uvicorn processes of benchmarks/_http_app.py on one PostgreSQL schema (a cluster:
they find each other through the database), makes the first node own one ``Ticker`` object,
and attaches N raw websocket clients to it, N/K through each node (``_ws_fanout.py``, one load
process per node). Clients of the other nodes are relayed to the owner. The script then makes
one durable broadcast every ``--interval`` seconds through the owner and measures delivery
latency to every client. The same N clients on ONE node are measured in the same run, as the
baseline. All processes (nodes, load generators, PostgreSQL) share this machine's cores: the
figure is what the owner's fan-out costs, not what K machines would do.

``--bare`` also measures the same clients on ``_bare_fanout_app.py``: uvicorn and Starlette
alone, a tick route that sends one pre-encoded frame to each socket in turn. It is what this
machine, this load generator and uvicorn's websocket send can do without the runtime.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx2
from bench_http import (
    HERE,
    PYTHON,
    cpu_seconds,
    drop,
    free_port,
    parser_for,
    prepare,
    wait_ready,
)

PATH = "/objects/ticker/hot/ws"
WS = "auto"  # uvicorn's websocket implementation (--ws)


def start_node(url: str, schema: str, port: int, app: str) -> subprocess.Popen[bytes]:
    """One uvicorn process of ``app``, a node of the cluster on ``schema``."""
    env = dict(os.environ, BENCH_DATABASE_URL=url, BENCH_SCHEMA=schema, PYTHONPATH=str(HERE))
    return subprocess.Popen(
        [PYTHON, "-m", "uvicorn", app, "--port", str(port), "--workers", "1",
         "--no-access-log", "--log-level", "warning", "--ws", WS], env=env,
    )


def run(
    url: str, clients: int, nodes: int, interval: float, seconds: float, bare: bool = False
) -> dict[str, Any]:
    """Serve ``nodes`` nodes, spread ``clients`` over them, broadcast; return the figures.

    ``bare``: one process of ``_bare_fanout_app.py`` (Starlette alone) instead of the runtime.
    """
    app = "_bare_fanout_app:app" if bare else "_http_app:app"
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(prepare(url, schema))
    ports = [free_port() for _ in range(nodes)]
    servers = [start_node(url, schema, port, app) for port in ports]
    loads: list[subprocess.Popen[str]] = []
    try:
        for port in ports:
            wait_ready(port)
        owner = f"http://127.0.0.1:{ports[0]}"
        httpx2.post(f"{owner}/tickers/hot/tick", params={"t": repr(time.time())},
                    timeout=30).raise_for_status()  # the first node thaws it: the owner
        shares = [clients // nodes + (1 if i < clients % nodes else 0) for i in range(nodes)]
        for port, share in zip(ports, shares, strict=True):
            loads.append(subprocess.Popen(
                [PYTHON, str(HERE / "_ws_fanout.py"), "127.0.0.1", str(port), PATH,
                 str(share), str(seconds + 1)], stdout=subprocess.PIPE, text=True,
            ))
        started = time.monotonic()
        for load in loads:
            assert load.stdout is not None
            json.loads(load.stdout.readline())  # all of this process's clients attached
        attach_s = time.monotonic() - started
        sent = 0
        cpu_before = [cpu_seconds(server.pid) for server in servers]
        window = time.monotonic()
        with httpx2.Client(base_url=owner, timeout=30) as client:
            deadline = time.monotonic() + seconds - 1.0
            next_at = time.monotonic()
            while time.monotonic() < deadline:
                client.post("/tickers/hot/tick", params={"t": repr(time.time())}
                            ).raise_for_status()
                sent += 1
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
        window = time.monotonic() - window
        cpu = [cpu_seconds(server.pid) - before
               for server, before in zip(servers, cpu_before, strict=True)]
        results = []
        for load in loads:
            assert load.stdout is not None
            results.append(json.loads(load.stdout.readline()))
            load.wait()
    finally:
        for proc in [*loads, *servers]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*loads, *servers]:
            proc.wait()
        asyncio.run(drop(url, schema))
    return {"nodes": nodes, "clients": clients, "sent": sent, "attach_s": attach_s, "bare": bare,
            "per_node": results, "cpu": cpu, "window": window}


def summary(r: dict[str, Any]) -> str:
    """One line: frames delivered against expected, latency per node and over all clients."""
    per = r["per_node"]
    frames = sum(p["frames"] for p in per)
    expected = r["sent"] * r["clients"]
    p99 = max(p["p99_ms"] or 0.0 for p in per)
    p50s = ", ".join(f"{p['p50_ms'] or 0:.0f}" for p in per)
    p99s = ", ".join(f"{p['p99_ms'] or 0:.0f}" for p in per)
    who = "Starlette alone (baseline)" if r["bare"] else f"{r['nodes']} node(s)"
    return (f"{r['clients']:,} clients over {who}: {r['sent']} broadcasts, "
            f"{frames:,} of {expected:,} frames delivered in the window "
            f"({100 * frames / max(expected, 1):.1f} %), attached in {r['attach_s']:.1f} s; "
            f"latency p50 by node [{p50s}] ms, p99 by node [{p99s}] ms, worst p99 {p99:.0f} ms; "
            f"{r['sent'] / r['window']:.1f} broadcasts/s (each waits for its "
            f"{'sends' if r['bare'] else 'commit'}); the "
            f"owner used {r['cpu'][0]:.1f} s of CPU in {r['window']:.1f} s = "
            f"{1e6 * r['cpu'][0] / max(expected, 1):.0f} us per frame delivered"
            + (", the relaying nodes " + ", ".join(f"{c:.1f}" for c in r["cpu"][1:]) + " s"
               if r["nodes"] > 1 else ""))


def main() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("--clients", type=int, default=10_000, help="websocket clients")
    parser.add_argument("--nodes", type=int, default=3, help="nodes the clients spread over")
    parser.add_argument("--interval", type=float, default=0.01,
                        help="seconds between two broadcasts (default 0.01)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of broadcasting")
    parser.add_argument("--ws", default="auto",
                        help="uvicorn's websocket implementation: auto (websockets), "
                        "websockets-sansio, wsproto")
    parser.add_argument("--bare", action="store_true",
                        help="also measure the baseline: the same clients on a Starlette app "
                        "that sends each frame itself (_bare_fanout_app.py), no runtime")
    args = parser.parse_args()
    global WS
    WS = args.ws
    print(f"load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    spread = run(args.database_url, args.clients, args.nodes, args.interval, args.seconds)
    print(summary(spread), flush=True)
    if args.nodes > 1:
        one = run(args.database_url, args.clients, 1, args.interval, args.seconds)
        print(summary(one), flush=True)
    if args.bare:
        base = run(args.database_url, args.clients, 1, args.interval, args.seconds, bare=True)
        print(summary(base), flush=True)
    print(f"one broadcast every {args.interval * 1000:g} ms; the owner sends every frame "
          "(relayed clients' frames go through their node's relay socket)")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    sys.exit(main())
