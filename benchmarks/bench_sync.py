"""State sync (issue 17): bytes on the wire for a one-field change, and what a commit costs.

    python benchmarks/bench_sync.py [--commits 2000] [--clients 1,100]

A 100-field state (50 integers, 50 short strings) of an object with ``sync_state = True``:
one field changes per call. The figures are the frames a client gets, as sent (strict JSON
text, UTF-8): the ``objects:state_patch`` of the change against the ``objects:state`` the
client would get instead (the whole view). Then the CPU a commit costs with the view and its
patch made (and sent to N attached clients) against the same class without sync, on the
in-memory storage, one caller: what state sync adds to the durable call path when a class
opts in (nothing when it does not: one attribute check per turn).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import pydantic
from _common import add_loop_option, log, revision, run_on_loop, table

from fastapi_objects.runtime import DurableObject, Runtime

FIELDS = 100

Wide = pydantic.create_model(  # type: ignore[call-overload]
    "Wide",
    **{f"f{i}": (int, 1_000 + i) if i % 2 else (str, f"value number {i}") for i in range(FIELDS)},
)


class Synced(DurableObject[Wide]):  # type: ignore[valid-type]
    sync_state = True

    async def set(self, field: str, value: Any) -> None:
        setattr(self.state, field, value)


class Unsynced(DurableObject[Wide]):  # type: ignore[valid-type]
    async def set(self, field: str, value: Any) -> None:
        setattr(self.state, field, value)


class Wire:
    """A client's transport: what it would be sent, as the text that goes on the wire."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def send(self, frame: dict[str, Any]) -> None:
        self.texts.append(json.dumps(frame))

    def send_text(self, text: str) -> None:
        self.texts.append(text)

    def close(self, code: int, reason: str) -> None:
        pass


async def _wire_bytes() -> tuple[int, int, str]:
    async with Runtime(objects=[Synced], database_url="memory://") as rt:
        wire = Wire()
        conn = await rt.gateway.attach(Synced, "w", wire)
        wire.texts.extend(await rt.gateway.state_frames(conn))
        await rt.get(Synced, "w").set("f41", 2_041)
        whole, patch = wire.texts
        assert json.loads(patch)["event"] == "objects:state_patch"
        return len(whole.encode()), len(patch.encode()), patch


async def _commit_cost(cls: type[DurableObject[Any]], clients: int, commits: int) -> float:
    """CPU seconds per call of ``set`` that commits, with ``clients`` attached."""
    async with Runtime(objects=[cls], database_url="memory://") as rt:
        for _ in range(clients):
            wire = Wire()
            conn = await rt.gateway.attach(cls, "c", wire)
            await rt.gateway.state_frames(conn)
        handle = rt.get(cls, "c")
        await handle.set("f1", 0)
        start = time.process_time()
        for n in range(commits):
            await handle.set("f1", n + 1)
        return (time.process_time() - start) / commits


async def main(args: argparse.Namespace) -> None:
    log(f"fastapi_objects {revision()}; load average {os.getloadavg()}")
    whole, patch, text = await _wire_bytes()
    print(f"\nOne field of {FIELDS} changed; the frames a client gets (bytes of UTF-8 JSON):\n")
    print(table([["objects:state (the whole view)", str(whole)],
                 ["objects:state_patch (the change)", str(patch)],
                 ["patch / whole", f"{patch / whole:.1%} ({whole / patch:.1f}x smaller)"]],
                ["frame", "bytes"]))
    print(f"\n  {text}\n")
    rows = []
    for clients in [int(c) for c in args.clients.split(",")]:
        base = await _commit_cost(Unsynced, clients, args.commits)
        synced = await _commit_cost(Synced, clients, args.commits)
        rows.append([str(clients), f"{base * 1e6:.0f} us", f"{synced * 1e6:.0f} us",
                     f"+{(synced - base) * 1e6:.0f} us"])
    print(f"CPU per durable call that commits (memory://, one caller, {args.commits} calls):\n")
    print(table(rows, ["clients attached", "no sync", "sync_state", "sync adds"]))
    log(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=2_000, help="calls per measurement")
    parser.add_argument("--clients", default="1,100",
                        help="comma-separated numbers of attached clients (default 1,100)")
    add_loop_option(parser)
    run_on_loop(main, parser.parse_args())
