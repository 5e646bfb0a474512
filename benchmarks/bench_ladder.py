"""The cost ladder of a durable call: from a bare group-commit loop up to a handle call.

    python benchmarks/bench_ladder.py [--backends memory,sqlite,postgres] [--duration 3]

Each rung adds one layer of the runtime to the one below and is measured as a closed loop
(64 callers over 1,000 objects, ``increment(1)``), in one run, on each backend. It prints
calls/s, this process's CPU per call, and the CPU each layer adds: when a figure regresses,
the rung whose cost grew names the layer. See benchmarks/README.md.

Rungs:

0. probe: a dict per object, the bare loop of bench_core/bench_sqlite (one writer, one batch
   in flight), committing through ``storage.commit`` (the backend's fenced statement);
1. + pydantic state: the object's state is its model, dumped to JSON each turn;
2. + storability check: the dump is checked to round-trip (``check_storable``);
3. + group committer: ``GroupCommitter.submit`` and the output gate's wait, instead of the loop;
4. + turn and gate: ``Activation.run`` (the FIFO gate, rollback, the call-chain context);
5. + arguments: ``MethodSpec.validate`` and ``Activation.call`` (the result check);
6. + routing: ``Host.invoke`` (the deadline, the routing loop, ``on_live``);
7. + handle: ``runtime.get(Counter, key).increment(1)``, what user code writes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import (  # the script's folder is on sys.path
    add_loop_option,
    closed_loop,
    drop_schema,
    fresh_schema_name,
    pg_execute,
    revision,
    run_on_loop,
    table,
)
from pydantic import BaseModel
from pydantic_core import to_json

from fastapi_objects.runtime import DurableObject, Runtime
from fastapi_objects.runtime.committer import GroupCommitter
from fastapi_objects.runtime.storable import storable_json
from fastapi_objects.storage import Commit

CALLERS = 64
OBJECTS = 1_000
PG_URL = os.environ.get("OBJECTS_BENCH_DATABASE_URL",
                        "postgresql+asyncpg://root@127.0.0.1:5432/test")


class CounterState(BaseModel):
    value: int = 0


class Counter(DurableObject[CounterState]):
    type_name = "ladder_counter"
    idle_timeout = 3600.0

    async def increment(self, by: int = 1) -> int:
        self.state.value += by
        return self.state.value


class _Obj:
    """What rungs 0-3 keep per object: its state, revisions and ownership epoch."""

    __slots__ = ("epoch", "key", "rev", "state")

    def __init__(self, key: str, rev: int, epoch: int, value: int) -> None:
        self.key = key
        self.rev = rev
        self.epoch = epoch
        self.state: Any = {"value": value}


class _Owner:
    """The ``CommitOwner`` rung 3 hands the committer (what an activation does, minimally)."""

    __slots__ = ("closed", "queued", "topic")

    def __init__(self, topic: str) -> None:
        self.closed = False
        self.queued = None
        self.topic = topic

    def committed(self, pending: Any) -> None:
        pass

    def commit_failed(self, pending: Any, failure: Any) -> None:
        raise SystemExit(f"ladder: a commit of {self.topic} failed: {failure}")


def _commit_of(obj: _Obj, state: Any) -> Commit:
    new = obj.rev + 1
    commit = Commit(type=Counter.type_name, key=obj.key, expected_rev=obj.rev, new_rev=new,
                    state=state, state_version=1, snapshot_rev=0, journal_rev=0,
                    epoch=obj.epoch)
    obj.rev = new
    return commit


async def _loop_rungs(rt: Runtime, objs: list[_Obj], duration: float, warmup: float,
                      rung: int) -> Any:
    """Rungs 0-3: the turn and the commit written out, layer by layer."""
    storage, node = rt.storage, rt.node_id
    loop = asyncio.get_running_loop()
    rnd = random.Random(rung).randrange
    models = {o.key: CounterState(value=o.state["value"]) for o in objs}
    if rung == 3:
        committer = GroupCommitter(storage, 512, node)
        committer.start()
        owners = {o.key: _Owner(o.key) for o in objs}

        async def call3(_: int) -> None:
            obj = objs[rnd(OBJECTS)]
            model = models[obj.key]
            model.value += 1
            state = storable_json(model.model_dump(mode="json"), "state")
            pending = committer.submit(owners[obj.key], _commit_of(obj, state))
            await pending.wait()

        try:
            return await closed_loop(CALLERS, duration, call3, warmup=warmup)
        finally:
            await committer.close()

    waiting: dict[str, tuple[Commit, list[asyncio.Future[None]]]] = {}
    wakeup = asyncio.Event()

    async def writer() -> None:
        nonlocal waiting
        while True:
            if not waiting:
                wakeup.clear()
                await wakeup.wait()
            batch, waiting = waiting, {}
            flags = await storage.commit([c for c, _ in batch.values()], (), node)
            if not all(flags):
                raise SystemExit("ladder: a commit was fenced out")
            for _, futures in batch.values():
                for fut in futures:
                    fut.set_result(None)

    async def call(_: int) -> None:
        obj = objs[rnd(OBJECTS)]
        if rung == 0:
            obj.state["value"] += 1
            state = to_json(obj.state)
        else:
            model = models[obj.key]
            model.value += 1
            if rung == 2:
                state = storable_json(model.model_dump(mode="json"), "state")
            else:
                state = to_json(model.model_dump(mode="json"))
        fut = loop.create_future()
        queued = waiting.get(obj.key)
        if queued is None:
            waiting[obj.key] = (_commit_of(obj, state), [fut])
            wakeup.set()
        else:  # merge into the queued commit, as the committer does
            commit, futures = queued
            commit.new_rev, commit.state = obj.rev + 1, state
            obj.rev += 1
            futures.append(fut)
        await fut

    task = asyncio.create_task(writer())
    try:
        return await closed_loop(CALLERS, duration, call, warmup=warmup)
    finally:
        task.cancel()


async def ladder(url: str, schema: str | None, duration: float, warmup: float) -> list[Any]:
    """Measure every rung on one backend; return (name, run) pairs."""
    keys = [f"c{i}" for i in range(OBJECTS)]
    results: list[Any] = []
    async with Runtime(objects=[Counter], database_url=url, schema=schema,
                       create_tables=True) as rt:
        sem = asyncio.Semaphore(CALLERS)

        async def create(key: str) -> None:
            async with sem:
                await rt.get(Counter, key).increment(1)

        await asyncio.gather(*(create(k) for k in keys))
        host = rt._host
        acts = [host.activations[(Counter.type_name, k)] for k in keys]
        spec = Counter.__objects_methods__["increment"]
        # Rungs 0-3 write the same rows as the live objects, under their ownership epochs.
        objs = [_Obj(a.key, a.record.rev, a.record.epoch or 0, a.instance.state.value)
                for a in acts]

        def sync_back() -> None:  # the live instances continue from what rungs 0-3 wrote
            for obj, act in zip(objs, acts, strict=True):
                act.record.rev = obj.rev
                value = obj.state["value"] if isinstance(obj.state, dict) else obj.state
                act.instance.state.value = value

        names = ["0. probe: dict state, bare loop, storage.commit",
                 "1. + pydantic state (model_dump per turn)",
                 "2. + storability check",
                 "3. + group committer and output-gate wait"]
        for rung, name in enumerate(names):
            run = await _loop_rungs(rt, objs, duration, warmup, rung)
            results.append((name, run))
        # Rungs 1-3 counted on their own models, not on obj.state: read the stored values back.
        stored = {cp.key: cp for cp in (await rt.storage.load_many(
            [(Counter.type_name, k) for k in keys])).values()}
        for obj in objs:
            obj.rev = stored[obj.key].rev
            obj.state = stored[obj.key].state["value"]
        sync_back()
        for act in acts:  # the live instances' JSON copy of their state, as a turn leaves it
            act.record.state_text = to_json(act.instance.state.model_dump(mode="json"))
        rnd = random.Random(9).randrange
        by_one = {"by": 1}
        rungs: list[tuple[str, Callable[[int], Awaitable[Any]]]] = [
            ("4. + turn and gate (Activation.run)",
             lambda _: acts[rnd(OBJECTS)].run(Counter.increment, by_one)),
            ("5. + arguments (MethodSpec.validate, Activation.call)",
             lambda _: acts[rnd(OBJECTS)].call(spec, spec.validate({"by": 1}))),
            ("6. + routing (Host.invoke)",
             lambda _: host.calls.invoke(Counter, keys[rnd(OBJECTS)], spec,
                                         spec.validate({"by": 1}))),
            ("7. + handle (runtime.get(...).increment(1))",
             lambda _: rt.get(Counter, keys[rnd(OBJECTS)]).increment(1)),
        ]
        for name, call in rungs:
            results.append((name, await closed_loop(CALLERS, duration, call, warmup=warmup)))
    return results


async def main(args: argparse.Namespace) -> None:
    duration = args.duration
    warmup = min(1.0, duration / 3)
    print(f"fastapi_objects {revision()}, load average {os.getloadavg()[0]:.2f}, "
          f"{CALLERS} callers over {OBJECTS:,} objects, {duration:.0f} s per rung", flush=True)
    for backend in args.backends.split(","):
        folder = None
        schema = None
        if backend == "memory":
            url = "memory://"
        elif backend == "sqlite":
            folder = tempfile.mkdtemp(prefix="bench_ladder_")
            url = f"sqlite+aiosqlite:///{folder}/ladder.db"
        elif backend == "postgres":
            url = PG_URL
            schema = fresh_schema_name("ladder")
            await pg_execute(url, f'CREATE SCHEMA "{schema}"')
        else:
            sys.exit(f"unknown backend {backend!r} (memory, sqlite, postgres)")
        print(f"\n[{time.strftime('%H:%M:%S')}] {backend}", flush=True)
        try:
            results = await ladder(url, schema, duration, warmup)
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            if schema is not None:
                await drop_schema(url, schema)
        rows = []
        previous = None
        for name, run in results:
            cpu = run.cpu_us_per_call
            added = "" if previous is None else f"{cpu - previous:+,.1f} us"
            rows.append([name, f"{run.rate:,.0f}", f"{cpu:,.1f} us", added,
                         f"{run.pct_ms(50):.2f} ms", f"{run.pct_ms(99):.2f} ms"])
            previous = cpu
        print(table(rows, ["rung", "calls/s", "CPU/call", "layer adds", "p50", "p99"]))
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="memory,sqlite,postgres",
                   help="comma-separated: memory, sqlite, postgres (default all three)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per rung (default 3)")
    add_loop_option(p)
    return p.parse_args()


if __name__ == "__main__":
    run_on_loop(main, _parse())
