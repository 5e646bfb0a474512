"""Hibernation with sockets open: the RSS of idle clients' rooms, asleep against awake.

    python benchmarks/bench_hibernate.py [--clients 10000] [--rooms 1000] [--database-url URL]

Two fresh processes, one per mode, each on its own fresh SQLite file (or the given database):
``sleep`` (``hibernate_with_clients = True``, the default) and ``awake`` (``False``, the
behaviour before issue 17). Each seeds ``--rooms`` rooms with a chat history
(``--history`` messages of ``--message-bytes`` characters), lets them hibernate, measures the
RSS, attaches ``--clients`` clients spread evenly over the rooms, waits ``--idle`` seconds
past the rooms' idle timeout (asleep: every room has left memory) and measures the RSS again.

The clients are in-process: each is a ``Connection`` attached through the runtime's gateway
(``on_connect`` runs, sets ``conn.state`` and a tag) with a transport that keeps what it
receives, and a pub/sub listener on its room's topic, as a websocket session holds one. So
the figure is the runtime's own share: a real server adds per socket what uvicorn and the
session hold (the same in both modes).

Then ``--wakes`` rooms get one message each from one of their clients (an ``on_message``
turn that broadcasts to the room), one room at a time; the script times the message to its
broadcast reaching another client of the room, waits for the rooms to sleep again and checks
that each cost exactly one thaw and one hibernation. Prints both modes' RSS, the ratio of
their growth over the seeded baseline, and the message latency to a sleeping room against an
awake one.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

from _common import add_loop_option, log, rss_bytes, run_on_loop  # the script's folder
from pydantic import BaseModel

from fastapi_objects import Connection, DurableObject
from fastapi_objects.runtime import Runtime

IDLE_TIMEOUT = 1.0


class RoomState(BaseModel):
    history: list[str] = []


class Room(DurableObject[RoomState]):
    type_name = "bench_room"
    idle_timeout = IDLE_TIMEOUT

    async def seed(self, messages: int, size: int) -> int:
        self.state.history = [f"{i:06d}".ljust(size, "x") for i in range(messages)]
        return len(self.state.history)

    async def on_connect(self, conn: Connection) -> None:
        conn.state = {"name": conn.query["name"], "joined": len(self.state.history)}
        conn.tags.add("member")

    async def on_message(self, conn: Connection, frame: dict[str, Any]) -> None:
        self.state.history = [*self.state.history[1:], frame["payload"]]
        self.broadcast("said", {"by": conn.state["name"], "text": frame["payload"]})


class AwakeRoom(Room):
    type_name = "bench_awake_room"
    hibernate_with_clients = False


class Client:
    """An in-process client: what a session is to the runtime (a transport), minus a socket."""

    __slots__ = ("closed", "frames", "last", "seen")

    def __init__(self) -> None:
        self.frames = 0
        self.last: Any = None
        self.closed: tuple[int, str] | None = None
        self.seen: asyncio.Event | None = None

    def send(self, frame: dict[str, Any]) -> None:
        self.frames += 1
        self.last = frame

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def heard(self, message: Any) -> None:
        """A broadcast on the room's topic (the pub/sub listener's callback)."""
        self.frames += 1
        self.last = message
        if self.seen is not None:
            self.seen.set()


async def _until(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"CHECK FAILED: {what} within {within:.0f} s")
        await asyncio.sleep(0.05)


def _measure(heap: bool) -> int:
    """The RSS, or with ``heap`` the bytes of live Python objects (``tracemalloc``)."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0] if heap else rss_bytes()


async def seed(args: argparse.Namespace) -> None:
    """Give every room of both modes its history, in a process of its own.

    So the measuring processes never held the rooms before their clients came: their RSS
    holds no memory the allocator kept from the seeding.
    """
    async with Runtime(objects=[Room, AwakeRoom], database_url=args.database_url,
                       create_tables=True, max_active=2 * args.rooms + 1000) as rt:
        for cls in (Room, AwakeRoom):
            for key in _rooms(args):
                await rt.call(cls, key, "seed", {"messages": args.history,
                                                 "size": args.message_bytes})


def _rooms(args: argparse.Namespace) -> list[str]:
    return [f"r{i:05d}" for i in range(args.rooms)]


async def child(args: argparse.Namespace) -> None:
    """One mode in this process; prints one JSON line of figures."""
    cls = Room if args.mode == "sleep" else AwakeRoom
    rooms = _rooms(args)
    if args.heap:
        tracemalloc.start()
    async with Runtime(objects=[cls], database_url=args.database_url,
                       max_active=args.rooms + 1000) as rt:
        before = _measure(args.heap)
        gateway = rt.gateway
        clients: list[tuple[str, Connection, Client]] = []
        started = time.perf_counter()
        per_wave, rooms_per_wave = args.clients // args.waves, args.rooms // args.waves
        for wave in range(args.waves):  # each onto rooms of its own, an idle timeout apart
            if wave:
                await asyncio.sleep(IDLE_TIMEOUT + args.idle)
            for i in range(wave * per_wave, (wave + 1) * per_wave):
                key = rooms[wave * rooms_per_wave + i % rooms_per_wave]
                client = Client()
                gateway.listen(f"{cls.type_name}:{key}", client.heard)
                conn = await gateway.attach(cls, key, client, query={"name": f"c{i}"})
                clients.append((key, conn, client))
        attach_s = time.perf_counter() - started
        await asyncio.sleep(IDLE_TIMEOUT + args.idle)
        if args.mode == "sleep":
            await _until(lambda: rt.stats().active == 0, 60, "rooms hibernated")
        stats = rt.stats()
        after = _measure(args.heap)
        # One message to each of --wakes rooms, one at a time: its latency, and its cost.
        thaws, hibernations = stats.thaws, stats.hibernations
        latencies = []
        for w in range(args.wakes):
            key = rooms[w * len(rooms) // args.wakes]
            members = [(c, t) for k, c, t in clients if k == key]
            (speaker, _), (_, listener) = members[0], members[1]
            listener.seen = asyncio.Event()
            sent = time.perf_counter()
            await gateway.message(speaker, {"event": "say", "payload": f"wake {w}"})
            await asyncio.wait_for(listener.seen.wait(), 30)
            latencies.append((time.perf_counter() - sent) * 1000)
            listener.seen = None
        woke = rt.stats()
        if args.mode == "sleep":
            await _until(lambda: rt.stats().active == 0, 60, "woken rooms slept again")
        slept = rt.stats()
        closed = sum(1 for _, _, c in clients if c.closed is not None)
    print(json.dumps({
        "mode": args.mode, "before": before, "after": after,
        "active": stats.active, "sleeping": stats.sleeping, "attach_s": attach_s,
        "wake_thaws": woke.thaws - thaws,
        "wake_hibernations": slept.hibernations - hibernations,
        "p50_ms": statistics.median(latencies), "max_ms": max(latencies),
        "closed": closed,
    }), flush=True)


def _run_mode(args: argparse.Namespace, mode: str, heap: bool = False) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--mode", mode, *(["--heap"] if heap else []),
            "--clients", str(args.clients), "--rooms", str(args.rooms),
            "--history", str(args.history), "--message-bytes", str(args.message_bytes),
            "--idle", str(args.idle), "--waves", str(args.waves),
            "--wakes", str(args.wakes), "--loop", args.loop, "--database-url", args.database_url]
    log(f"{mode}{' (live heap)' if heap else ''}: {args.clients:,} clients over "
        f"{args.rooms:,} rooms")
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"mode {mode} failed:\n{done.stdout}\n{done.stderr}")
    lines = done.stdout.strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    return result


def parent(args: argparse.Namespace) -> None:
    """Both modes, each in a fresh process; the comparison."""
    log(f"load average {os.getloadavg()[0]:.2f}")
    folder = None
    if args.database_url is None:
        folder = tempfile.mkdtemp(prefix="bench_hibernate_")
        args.database_url = f"sqlite+aiosqlite:///{folder}/objects.db"
    try:
        _run_mode(args, "seed")
        awake, asleep = _run_mode(args, "awake"), _run_mode(args, "sleep")
        awake_heap, asleep_heap = (
            _run_mode(args, "awake", heap=True), _run_mode(args, "sleep", heap=True)
        )
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    mib = 2**20
    print(f"\n{args.clients:,} idle clients over {args.rooms:,} rooms in {args.waves} waves, "
          f"each room {args.history} messages of {args.message_bytes} characters, clients "
          "in-process:")
    for r, h in ((awake, awake_heap), (asleep, asleep_heap)):
        growth, live = r["after"] - r["before"], h["after"] - h["before"]
        print(f"  {r['mode']:>5}: RSS {r['after'] / mib:6.1f} MiB, +{growth / mib:.1f} MiB "
              f"over the runtime started; live Python objects +{live / mib:.1f} MiB "
              f"({live / args.clients:,.0f} bytes per client); {r['active']:,} rooms live, "
              f"{r['sleeping']:,} clients asleep; attached over {r['attach_s']:.0f} s")

    def ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
        return float(a["after"] - a["before"]) / max(b["after"] - b["before"], 1)

    print(f"  asleep / awake: RSS {asleep['after'] / awake['after']:.2f} (its growth "
          f"{ratio(asleep, awake):.2f}), live Python objects {ratio(asleep_heap, awake_heap):.2f}")
    print(f"  one message to {args.wakes} rooms: asleep, p50 {asleep['p50_ms']:.2f} ms "
          f"(max {asleep['max_ms']:.1f}), {asleep['wake_thaws']} thaws and "
          f"{asleep['wake_hibernations']} hibernations; awake, p50 {awake['p50_ms']:.2f} ms "
          f"(max {awake['max_ms']:.1f}), {awake['wake_thaws']} thaws")
    if asleep["wake_thaws"] != args.wakes or asleep["wake_hibernations"] != args.wakes:
        raise SystemExit("CHECK FAILED: a room that woke for one message did not cost one thaw")
    if asleep["closed"] or awake["closed"]:
        raise SystemExit("CHECK FAILED: clients were closed")
    log(f"load average {os.getloadavg()[0]:.2f} at the end")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=10_000, help="how many (default 10,000)")
    p.add_argument("--rooms", type=int, default=1_000, help="how many (default 1,000)")
    p.add_argument("--history", type=int, default=50,
                   help="messages in each room's state (default 50)")
    p.add_argument("--message-bytes", type=int, default=100,
                   help="characters per message (default 100)")
    p.add_argument("--idle", type=float, default=1.0,
                   help="seconds to wait past the idle timeout before measuring (default 1)")
    p.add_argument("--waves", type=int, default=10,
                   help="clients arrive in this many waves, each onto rooms of its own, an idle "
                   "timeout apart (default 10; must divide --clients and --rooms)")
    p.add_argument("--wakes", type=int, default=100,
                   help="rooms woken by one message each (default 100)")
    p.add_argument("--heap", action="store_true",
                   help="with --mode: measure live Python objects (tracemalloc), not the RSS")
    p.add_argument("--database-url", default=None,
                   help="storage (default: a fresh SQLite file in a temporary folder)")
    p.add_argument("--mode", choices=["seed", "sleep", "awake"], default=None,
                   help="run one step in this process (by default the script runs them all)")
    add_loop_option(p)
    args = p.parse_args()
    if args.clients % args.waves or args.rooms % args.waves:
        p.error("--waves must divide --clients and --rooms")
    return args


if __name__ == "__main__":
    arguments = _parse()
    if arguments.mode is None:
        parent(arguments)
    else:
        run_on_loop(seed if arguments.mode == "seed" else child, arguments)
