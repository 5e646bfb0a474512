"""fly-replay against forwarding: three real nodes behind a proxy that spreads requests.

The proxy (tests/_fly_proxy.py, a stand-in for Fly's) sends each request to the next machine
in turn, so two of three land on a machine that does not own the counter. With forwarding the
machine forwards the call to the owner over its internal listener; with ``fly_replay`` it
answers ``fly-replay`` and the proxy replays the request on the owner. Both run in this one
process's proxy on this machine: the figure compares the two paths, not Fly's network.

    .venv/bin/python benchmarks/bench_replay.py [--calls 600] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx2  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from fastapi_objects.storage import open_storage  # noqa: E402
from tests._fly_proxy import FlyProxy  # noqa: E402
from tests._nodes import Cluster  # noqa: E402
from tests._server import LiveServer  # noqa: E402

PG = os.environ.get("OBJECTS_TEST_DATABASE_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test")


async def run(replay: bool, calls: int, concurrency: int) -> dict[str, float]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG.replace("postgresql+asyncpg", "postgresql"))
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    storage = open_storage(PG, schema=schema)
    await storage.create_tables()
    env = dict(os.environ, OBJECTS_DATABASE_URL=PG, OBJECTS_SCHEMA=schema,
               OBJECTS_FLY_REPLAY="1" if replay else "0")
    names = ["n1", "n2", "n3"]
    try:
        async with Cluster(env, names, ttl=1.5) as cluster:
            await asyncio.sleep(1.0)  # one heartbeat: every node knows the others' machines
            proxy = FlyProxy({f"m-{n}": cluster[n].url for n in names})
            async with LiveServer(proxy) as front:
                async with httpx2.AsyncClient(base_url=front.url, timeout=60) as http:
                    await http.post("/counters/bench/increment")  # activate it somewhere
                    latencies: list[float] = []
                    queue = list(range(calls))

                    async def caller() -> None:
                        while queue:
                            queue.pop()
                            started = time.perf_counter()
                            response = await http.post("/counters/bench/increment")
                            assert response.status_code == 200, response.text
                            latencies.append(time.perf_counter() - started)

                    started = time.perf_counter()
                    await asyncio.gather(*(caller() for _ in range(concurrency)))
                    elapsed = time.perf_counter() - started
                attach = []
                for _ in range(12):
                    began = time.perf_counter()
                    ws = await connect(front.ws_url("/objects/counter/bench/ws"))
                    await ws.recv()  # the objects:attached frame
                    attach.append(time.perf_counter() - began)
                    await ws.close()
            await proxy.http.aclose()
    finally:
        await storage.close()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
    latencies.sort()
    return {
        "calls_per_s": calls / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "attach_p50_ms": 1000 * statistics.median(attach),
        "replays": float(proxy.replays),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    forward = await run(False, args.calls, args.concurrency)
    replay = await run(True, args.calls, args.concurrency)
    header = ("path", "calls/s", "p50 ms", "p99 ms", "attach p50", "replays")
    print(f"{header[0]:<12}" + "".join(f"{h:>11}" for h in header[1:]))
    for name, r in (("forwarding", forward), ("fly-replay", replay)):
        print(f"{name:<12}{r['calls_per_s']:>11.0f}{r['p50_ms']:>11.2f}{r['p99_ms']:>11.2f}"
              f"{r['attach_p50_ms']:>11.2f}{r['replays']:>11.0f}")
    print(f"fly-replay / forwarding: {replay['calls_per_s'] / forward['calls_per_s']:.2f}x calls/s")


if __name__ == "__main__":
    asyncio.run(main())
