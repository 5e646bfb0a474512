"""The runtime's contract on every backend: turns, commits, journal, hibernation and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from _support import wait_until
from pydantic import BaseModel
from pydantic_core import to_json

from fastapi_objects._exceptions import (
    CallTimeout,
    InvalidArguments,
    InvalidKey,
    ObjectNotFound,
    Overloaded,
    UnknownMethod,
    UnknownObjectType,
)
from fastapi_objects.runtime import DurableObject, Runtime, readonly
from fastapi_objects.storage import Checkpoint, Storage, open_storage

if TYPE_CHECKING:
    from conftest import Backend

# Events a test hands to the objects it calls (objects are built by the runtime, not the test).
GATES: dict[str, asyncio.Event] = {}
PROBE: dict[str, Any] = {}


class CounterState(BaseModel):
    value: int = 0
    log: list[str] = []


class Counter(DurableObject[CounterState]):
    async def increment(self, by: int = 1) -> int:
        self.state.value += by
        return self.state.value

    @readonly
    async def get(self) -> int:
        return self.state.value

    @readonly
    async def get_log(self) -> list[str]:
        return self.state.log

    async def append(self, item: str) -> list[str]:
        self.state.log.append(item)
        return list(self.state.log)

    async def hold(self, gate: str) -> int:
        """Change state, then wait for the test to open ``gate``."""
        self.state.value += 1
        PROBE["writer"] = True
        try:
            await GATES[gate].wait()
        finally:
            PROBE["writer"] = False
        return self.state.value

    @readonly
    async def peek(self, gate: str) -> int:
        PROBE["readers"] = PROBE.get("readers", 0) + 1
        PROBE["max_readers"] = max(PROBE.get("max_readers", 0), PROBE["readers"])
        try:
            await GATES[gate].wait()
        finally:
            PROBE["readers"] -= 1
        return self.state.value

    async def fail(self, by: int) -> int:
        self.state.value += by
        self.state.log.append("doomed")
        self.record("inc", by)
        raise RuntimeError("boom")

    async def touch(self) -> int:
        """A mutating method that changes nothing."""
        return self.state.value

    async def note(self, text: str) -> None:
        self.record("note", {"text": text})

    async def counted(self, by: int) -> int:
        self.state.value += by
        self.record("inc", by)
        return self.state.value


class PingA(DurableObject[CounterState]):
    async def via_b(self) -> int:
        self.state.value += 1
        result: int = await self.objects.get(PingB, self.key).back_to_a()
        return result

    async def via_self(self) -> int:
        self.state.value += 1
        result: int = await self.objects.get(PingA, self.key).bump()
        return result

    async def bump(self) -> int:
        self.state.value += 10
        return self.state.value


class PingB(DurableObject[CounterState]):
    async def back_to_a(self) -> int:
        self.state.value += 1
        result: int = await self.objects.get(PingA, self.key).bump()
        return result


class Slow(DurableObject[CounterState]):
    call_timeout = 0.5  # a SQLite commit (fsync) on a loaded 2-core machine can take 0.1 s

    async def increment(self) -> int:
        self.state.value += 1
        return self.state.value

    async def stall(self) -> int:
        self.state.value += 100
        self.record("stalled")
        await asyncio.sleep(30)
        return self.state.value


class Limited(DurableObject[CounterState]):
    max_queue = 2

    async def increment(self) -> int:
        self.state.value += 1
        return self.state.value

    async def hold(self, gate: str) -> int:
        PROBE["writer"] = True
        await GATES[gate].wait()
        return self.state.value


class SleepyState(BaseModel):
    value: int = 0
    hibernations: int = 0


class Sleepy(DurableObject[SleepyState]):
    idle_timeout = 0.05
    hooks: ClassVar[list[str]] = []

    async def on_activate(self) -> None:
        Sleepy.hooks.append(f"activate:{self.key}:{self.state.value}")

    async def on_hibernate(self) -> None:
        Sleepy.hooks.append(f"hibernate:{self.key}")
        self.state.hibernations += 1  # committed before the object leaves memory

    async def increment(self, by: int = 1) -> int:
        self.state.value += by
        return self.state.value

    async def hold(self, gate: str) -> int:
        PROBE["writer"] = True
        await GATES[gate].wait()
        return self.state.value

    @readonly
    async def read(self) -> dict[str, int]:
        return self.state.model_dump()


class Unregistered(DurableObject[CounterState]):
    async def increment(self) -> int:
        return 1


OBJECTS: list[type[DurableObject[Any]]] = [Counter, PingA, PingB, Slow, Limited, Sleepy]


@pytest.fixture(autouse=True)
def _reset() -> None:
    GATES.clear()
    PROBE.clear()
    Sleepy.hooks.clear()


@pytest.fixture
async def rt(backend: Backend) -> AsyncIterator[Runtime]:
    async with Runtime(
        objects=OBJECTS, database_url=backend.url, schema=backend.schema, create_tables=True
    ) as runtime:
        yield runtime


@pytest.fixture
async def reader(backend: Backend, rt: Runtime) -> AsyncIterator[Storage]:
    """A second storage on the same database (for memory, the runtime's own storage)."""
    if backend.name == "memory":
        yield rt.storage
        return
    other = open_storage(backend.url, schema=backend.schema)
    try:
        yield other
    finally:
        await other.close()


async def _stored(storage: Storage, type: str, key: str) -> Checkpoint:
    cp = await storage.load(type, key)
    assert cp is not None, f"{type}:{key} is not stored"
    return cp


async def _spin(n: int = 20) -> None:
    """Let every ready task run a few steps."""
    for _ in range(n):
        await asyncio.sleep(0)


# -- turns ----------------------------------------------------------------------------------


async def test_turns_run_one_at_a_time_in_arrival_order(rt: Runtime) -> None:
    c = rt.get(Counter, "k")
    await c.increment(0)  # thawed, so every later call queues on the gate directly
    GATES["g"] = asyncio.Event()
    first = asyncio.create_task(c.hold("g"))
    await wait_until(lambda: PROBE.get("writer") is True, what="hold() to start")
    items = [f"i{n}" for n in range(20)]
    tasks = [asyncio.create_task(c.append(item)) for item in items]
    await _spin()
    assert not any(t.done() for t in tasks), "a call ran while another turn was running"
    GATES["g"].set()
    assert await first == 1
    results = await asyncio.gather(*tasks)
    for n, result in enumerate(results):
        assert result == items[: n + 1]  # each turn saw exactly the turns that arrived before it
    assert await c.get_log() == items


async def test_the_call_that_thaws_keeps_its_place(rt: Runtime) -> None:
    """The first call waits for the load; calls arriving meanwhile must queue behind it."""
    c = rt.get(Counter, "fresh")
    items = [f"i{n}" for n in range(10)]
    results = await asyncio.gather(*(c.append(item) for item in items))
    assert results[0] == ["i0"]
    assert await c.get_log() == items


async def test_readonly_calls_overlap(rt: Runtime) -> None:
    c = rt.get(Counter, "k")
    await c.increment(5)
    GATES["r"] = asyncio.Event()
    peeks = [asyncio.create_task(c.peek("r")) for _ in range(3)]
    await wait_until(lambda: PROBE.get("readers") == 3, within=5, what="3 readers inside")
    GATES["r"].set()
    assert await asyncio.gather(*peeks) == [5, 5, 5]
    assert PROBE["max_readers"] == 3


async def test_readonly_waits_for_a_running_turn(rt: Runtime) -> None:
    c = rt.get(Counter, "k")
    await c.increment(5)
    GATES["w"], GATES["r"] = asyncio.Event(), asyncio.Event()
    GATES["r"].set()
    writer = asyncio.create_task(c.hold("w"))
    await wait_until(lambda: PROBE.get("writer") is True, what="hold() to start")
    peek = asyncio.create_task(c.peek("r"))
    await _spin()
    assert not peek.done() and PROBE.get("max_readers") is None
    GATES["w"].set()
    assert await writer == 6
    assert await peek == 6  # it ran after the turn and saw its state


async def test_turn_waits_for_running_readers(rt: Runtime) -> None:
    c = rt.get(Counter, "k")
    await c.increment(5)
    GATES["r"], GATES["w"] = asyncio.Event(), asyncio.Event()
    GATES["w"].set()
    peek = asyncio.create_task(c.peek("r"))
    await wait_until(lambda: PROBE.get("readers") == 1, what="reader inside")
    writer = asyncio.create_task(c.hold("w"))
    late_reader = asyncio.create_task(c.get())  # arrives after the writer: waits behind it
    await _spin()
    assert not writer.done() and PROBE.get("writer") is None
    assert not late_reader.done()
    GATES["r"].set()
    assert await peek == 5
    assert await writer == 6
    assert await late_reader == 6


async def test_reentrant_chains_do_not_hang(rt: Runtime, reader: Storage) -> None:
    a = rt.get(PingA, "x")
    assert await asyncio.wait_for(a.via_b(), 5) == 11  # A -> B -> A
    assert await asyncio.wait_for(a.via_self(), 5) == 22  # A -> A
    assert (await _stored(reader, "ping_a", "x")).state["value"] == 22
    assert (await _stored(reader, "ping_b", "x")).state["value"] == 1


# -- transactional turns ----------------------------------------------------------------------


async def test_raising_method_rolls_back_and_writes_nothing(rt: Runtime, reader: Storage) -> None:
    c = rt.get(Counter, "k")
    await c.append("kept")
    await c.increment(3)
    before = await _stored(reader, "counter", "k")
    commits = rt.stats().commits
    with pytest.raises(RuntimeError, match="boom"):
        await c.fail(100)
    assert await c.get() == 3
    assert await c.get_log() == ["kept"]
    after = await _stored(reader, "counter", "k")
    assert (after.rev, after.journal_rev, after.state) == (before.rev, 0, before.state)
    assert await rt.journal(Counter, "k") == []
    assert rt.stats().commits == commits
    assert await c.increment(1) == 4  # the object still works, on the rolled-back state


async def test_unchanged_turn_writes_nothing(rt: Runtime, reader: Storage) -> None:
    c = rt.get(Counter, "k")
    await c.increment(2)
    rev = (await _stored(reader, "counter", "k")).rev
    commits = rt.stats().commits
    for _ in range(5):
        assert await c.touch() == 2
    assert rt.stats().commits == commits
    assert (await _stored(reader, "counter", "k")).rev == rev


async def test_result_is_returned_only_after_commit(rt: Runtime, reader: Storage) -> None:
    keys = [f"k{i}" for i in range(10)]

    async def call_then_check(key: str) -> None:
        value = await rt.get(Counter, key).increment(1)
        stored = await _stored(reader, "counter", key)
        assert stored.state["value"] >= value, f"{key}: acknowledged {value}, stored {stored}"

    await asyncio.gather(*(call_then_check(k) for k in keys for _ in range(8)))
    for key in keys:
        assert (await _stored(reader, "counter", key)).state["value"] == 8


async def test_group_commit_batches_many_objects(rt: Runtime) -> None:
    keys = [f"k{i}" for i in range(50)]
    await asyncio.gather(*(rt.get(Counter, k).increment(0) for k in keys))  # thaw them all
    before = rt.stats()
    assert await asyncio.gather(*(rt.get(Counter, k).increment(1) for k in keys)) == [1] * 50
    after = rt.stats()
    assert after.commits - before.commits == 50
    assert after.batches - before.batches < 50 // 2, "commits were not batched"


async def test_record_commits_with_the_turn(rt: Runtime, reader: Storage) -> None:
    c = rt.get(Counter, "k")
    await c.note("first")  # creates the object with its default state
    assert await c.counted(2) == 2
    await c.note("journal only")  # state unchanged: a journal-only commit
    with pytest.raises(RuntimeError):
        await c.fail(7)  # its entry is dropped with the turn
    assert await c.counted(3) == 5
    journal = await rt.journal(Counter, "k")
    assert [(e.rev, e.kind, e.payload) for e in journal] == [
        (1, "note", {"text": "first"}),
        (2, "inc", 2),
        (3, "note", {"text": "journal only"}),
        (4, "inc", 3),
    ]
    assert [e.rev for e in await rt.journal(Counter, "k", after_rev=2)] == [3, 4]
    assert [e.rev for e in await rt.journal(Counter, "k", after_rev=1, limit=2)] == [2, 3]
    cp = await _stored(reader, "counter", "k")
    assert (cp.rev, cp.journal_rev, cp.state["value"], cp.state_version) == (4, 4, 5, 1)


# -- hibernation ----------------------------------------------------------------------------


async def test_hibernates_after_idle_timeout_and_thaws_intact(rt: Runtime, reader: Storage) -> None:
    s = rt.get(Sleepy, "a")
    assert await s.increment(5) == 5
    assert rt.stats().active == 1
    await wait_until(lambda: rt.stats().hibernations == 1, what="hibernation")
    assert rt.stats().active == 0
    cp = await _stored(reader, "sleepy", "a")
    assert cp.status == "hibernated"
    assert cp.state == {"value": 5, "hibernations": 1}  # on_hibernate's change was committed
    assert await s.read() == {"value": 5, "hibernations": 1}
    stats = rt.stats()
    assert (stats.active, stats.thaws, stats.hibernations) == (1, 2, 1)
    assert Sleepy.hooks == ["activate:a:0", "hibernate:a", "activate:a:5"]
    await wait_until(lambda: rt.stats().active == 0, what="second hibernation")
    assert await s.increment(1) == 6
    assert rt.stats().turns >= 4
    assert rt.stats().commits >= 3


async def test_a_running_call_keeps_the_object_awake(rt: Runtime) -> None:
    s = rt.get(Sleepy, "a")
    await s.increment(1)
    GATES["g"] = asyncio.Event()
    held = asyncio.create_task(s.hold("g"))
    await wait_until(lambda: PROBE.get("writer") is True, what="hold() to start")
    await asyncio.sleep(0.25)  # five idle timeouts
    assert rt.stats().hibernations == 0 and rt.stats().active == 1
    GATES["g"].set()
    assert await held == 1
    await wait_until(lambda: rt.stats().hibernations == 1, what="hibernation after the call")


async def test_query_does_not_thaw(rt: Runtime) -> None:
    for key in ("u:1", "u:2", "v:1"):
        await rt.get(Sleepy, key).increment(1)
    await wait_until(lambda: rt.stats().active == 0, what="all hibernated")
    thaws = rt.stats().thaws
    page = await rt.query(Sleepy, status="hibernated", key_prefix="u:")
    assert [(cp.key, cp.status, cp.state["value"]) for cp in page.items] == [
        ("u:1", "hibernated", 1), ("u:2", "hibernated", 1)
    ]
    assert [cp.key for cp in (await rt.query("sleepy", status_in=["hibernated"])).items] == [
        "u:1", "u:2", "v:1"
    ]
    first = await rt.query(Sleepy, limit=2)
    rest = await rt.query(Sleepy, limit=2, cursor=first.next_cursor)
    assert [cp.key for cp in first.items + rest.items] == ["u:1", "u:2", "v:1"]
    assert (rt.stats().active, rt.stats().thaws) == (0, thaws)
    assert [(s.type, s.status, s.count) for s in await rt.type_stats()] == [
        ("sleepy", "hibernated", 3)
    ]


# -- errors ---------------------------------------------------------------------------------


async def test_unknown_method(rt: Runtime) -> None:
    c = rt.get(Counter, "k")
    with pytest.raises(UnknownMethod, match="nope"):
        c.nope  # type: ignore[attr-defined]  # noqa: B018 - the attribute access itself raises
    assert not hasattr(c, "nope")  # UnknownMethod is an AttributeError
    for name in ("nope", "on_activate", "record", "_private", "state"):
        with pytest.raises(UnknownMethod):
            await rt.call(Counter, "k", name, {})
    assert rt.stats().thaws == 0  # nothing ran


async def test_invalid_arguments_are_clear_and_harmless(rt: Runtime) -> None:
    c = rt.get(Counter, "k")
    with pytest.raises(InvalidArguments, match="by"):
        await c.increment(by="many")  # type: ignore[arg-type]
    with pytest.raises(InvalidArguments, match="by"):
        await rt.call(Counter, "k", "increment", {"by": "many"})
    with pytest.raises(InvalidArguments, match="bogus"):
        await rt.call(Counter, "k", "increment", {"bogus": 1})
    with pytest.raises(InvalidArguments):
        await c.increment(1, 2)  # type: ignore[call-arg]
    with pytest.raises(InvalidArguments):
        await c.increment(1, by=2)  # type: ignore[misc]
    with pytest.raises(InvalidArguments):
        await c.get(1)  # type: ignore[call-arg]
    with pytest.raises(InvalidArguments):
        await c.note()  # type: ignore[call-arg]  # a required argument is missing
    assert rt.stats().thaws == 0  # rejected before the object was touched
    assert await c.increment(by=2) == 2
    assert await rt.call(Counter, "k", "increment", {"by": "3"}) == 5  # lax, as pydantic is


@pytest.mark.parametrize("key", ["", "x" * 257, "a/b", "a b", "tab\t", "é", "a\n", 5, None])
async def test_invalid_keys(rt: Runtime, key: Any) -> None:
    with pytest.raises(InvalidKey):
        rt.get(Counter, key)
    with pytest.raises(InvalidKey):
        await rt.call(Counter, key, "increment", {})
    with pytest.raises(InvalidKey):
        await rt.journal(Counter, key)
    assert rt.stats().thaws == 0


async def test_longest_and_special_keys_work(rt: Runtime) -> None:
    for key in ("x" * 256, "user@example.com", "a:b.c_d-e+f=g~h", "0"):
        assert await rt.get(Counter, key).increment(1) == 1
        assert (await _stored(rt.storage, "counter", key)).key == key


async def test_unknown_object_type(rt: Runtime) -> None:
    with pytest.raises(UnknownObjectType, match="Unregistered"):
        rt.get(Unregistered, "k")
    with pytest.raises(UnknownObjectType, match="nope"):
        rt.object_type("nope")
    with pytest.raises(UnknownObjectType):
        await rt.query("nope")
    assert issubclass(UnknownObjectType, ObjectNotFound)
    assert rt.object_type("counter") is Counter


async def test_call_timeout_rolls_back(rt: Runtime, reader: Storage) -> None:
    s = rt.get(Slow, "k")
    assert await s.increment() == 1
    with pytest.raises(CallTimeout, match=r"slow:k\.stall"):
        await s.stall()
    cp = await _stored(reader, "slow", "k")
    assert (cp.rev, cp.journal_rev, cp.state["value"]) == (1, 0, 1)
    assert await s.increment() == 2  # the turn was cancelled and its changes dropped


async def test_overloaded_when_the_queue_is_full(rt: Runtime) -> None:
    limited = rt.get(Limited, "k")
    await limited.increment()
    GATES["g"] = asyncio.Event()
    held = asyncio.create_task(limited.hold("g"))
    await wait_until(lambda: PROBE.get("writer") is True, what="hold() to start")
    queued = [asyncio.create_task(limited.increment()) for _ in range(2)]
    await _spin()
    with pytest.raises(Overloaded, match="max_queue=2") as info:
        await limited.increment()
    assert info.value.retry_after > 0
    GATES["g"].set()
    assert await held == 1
    assert sorted(await asyncio.gather(*queued)) == [2, 3]
    assert await limited.increment() == 4


# -- schema evolution and corrupt checkpoints ------------------------------------------------


class ProfileState(BaseModel):
    full_name: str
    visits: int = 0


class Profile(DurableObject[ProfileState]):
    """Version 2: version 1 stored ``first`` and ``last``."""

    state_version = 2
    migrations: ClassVar[list[int]] = []

    @classmethod
    def migrate_state(cls, data: dict[str, Any], from_version: int) -> dict[str, Any]:
        cls.migrations.append(from_version)
        assert from_version == 1
        return {"full_name": f"{data['first']} {data['last']}", "visits": data.get("visits", 0)}

    @readonly
    async def name(self) -> str:
        return self.state.full_name

    async def visit(self) -> int:
        self.state.visits += 1
        return self.state.visits


class Strict(DurableObject[ProfileState]):
    """Version 2 without a migrate_state."""

    state_version = 2

    @readonly
    async def name(self) -> str:
        return self.state.full_name


class ProfileV1State(BaseModel):
    first: str = ""
    last: str = ""
    visits: int = 0


class ProfileV1(DurableObject[ProfileV1State]):
    """The same type as Profile, as an older deploy defined it."""

    type_name = "profile"

    async def set_name(self, first: str, last: str) -> None:
        self.state = ProfileV1State(first=first, last=last, visits=self.state.visits + 1)


async def _seed(storage: Storage, type: str, key: str, state: Any, version: int) -> None:
    from fastapi_objects.storage import Commit

    commit = Commit(type=type, key=key, expected_rev=0, new_rev=1, state=to_json(state),
                    state_version=version, snapshot_rev=0, journal_rev=0)
    assert await storage.commit([commit]) == [True]


@pytest.fixture
async def rt2(backend: Backend) -> AsyncIterator[Runtime]:
    Profile.migrations.clear()
    async with Runtime(
        objects=[Profile, Strict, Counter], database_url=backend.url, schema=backend.schema,
        create_tables=True,
    ) as runtime:
        yield runtime


async def test_v1_checkpoint_thaws_into_v2_model(rt2: Runtime) -> None:
    await _seed(rt2.storage, "profile", "ada", {"first": "Ada", "last": "Lovelace", "visits": 2}, 1)
    p = rt2.get(Profile, "ada")
    assert await p.name() == "Ada Lovelace"
    assert Profile.migrations == [1]
    assert await p.visit() == 3
    cp = await _stored(rt2.storage, "profile", "ada")
    assert (cp.state_version, cp.state) == (2, {"full_name": "Ada Lovelace", "visits": 3})


async def test_v1_object_written_by_an_older_deploy(sql_backend: Backend) -> None:
    kw: dict[str, Any] = {"database_url": sql_backend.url, "schema": sql_backend.schema,
                          "create_tables": True}
    async with Runtime(objects=[ProfileV1], **kw) as old:
        await old.get(ProfileV1, "ada").set_name("Ada", "Lovelace")
    Profile.migrations.clear()
    async with Runtime(objects=[Profile], **kw) as new:
        assert await new.get(Profile, "ada").visit() == 2
    async with Runtime(objects=[Profile], **kw) as again:
        assert await again.get(Profile, "ada").name() == "Ada Lovelace"
        cp = await _stored(again.storage, "profile", "ada")
        assert (cp.state_version, cp.state["visits"]) == (2, 2)
    assert Profile.migrations == [1]  # the second thaw read a version-2 checkpoint


async def test_missing_migrate_state_is_corrupt_state(rt2: Runtime) -> None:
    from fastapi_objects._exceptions import CorruptState

    await _seed(rt2.storage, "strict", "k", {"first": "A", "last": "B"}, 1)
    with pytest.raises(CorruptState, match="migrate_state"):
        await rt2.get(Strict, "k").name()
    assert rt2.stats().active == 0
    cp = await _stored(rt2.storage, "strict", "k")
    assert (cp.rev, cp.state_version) == (1, 1)  # nothing was overwritten


async def test_missing_migrate_state_names_the_object(rt2: Runtime) -> None:
    from fastapi_objects._exceptions import CorruptState

    await _seed(rt2.storage, "strict", "k", {"first": "A", "last": "B"}, 1)
    with pytest.raises(CorruptState, match="strict:k"):
        await rt2.get(Strict, "k").name()


async def test_newer_state_version_is_corrupt_state_naming_the_object(rt2: Runtime) -> None:
    from fastapi_objects._exceptions import CorruptState

    await _seed(rt2.storage, "profile", "k", {"full_name": "x"}, 3)
    for _ in range(2):  # a failed thaw leaves nothing behind; the next call fails the same way
        with pytest.raises(CorruptState, match=r"profile:k.*version 3.*newer"):
            await rt2.get(Profile, "k").visit()
        assert rt2.stats().active == 0
    assert (await _stored(rt2.storage, "profile", "k")).state == {"full_name": "x"}


@pytest.mark.parametrize(
    "state", [[1, 2], "text", {"value": "not a number"}, {"value": 1, "log": "nope"}]
)
async def test_state_that_does_not_fit_is_corrupt_state(rt2: Runtime, state: Any) -> None:
    from fastapi_objects._exceptions import CorruptState

    await _seed(rt2.storage, "counter", "k", state, 1)
    with pytest.raises(CorruptState, match="counter:k"):
        await rt2.get(Counter, "k").get()
    assert await rt2.get(Counter, "other").increment(1) == 1  # other objects are unaffected


async def test_invalid_json_in_a_sqlite_checkpoint(tmp_path: Any) -> None:
    import sqlite3

    from fastapi_objects._exceptions import CorruptState

    path = tmp_path / "objects.db"
    url = f"sqlite+aiosqlite:///{path}"
    async with Runtime(objects=[Counter], database_url=url, create_tables=True) as rt:
        await rt.get(Counter, "bad").increment(1)
        await rt.get(Counter, "good").increment(2)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE objects_checkpoints SET state = 'not json{' WHERE key = 'bad'")
    async with Runtime(objects=[Counter], database_url=url) as rt:
        with pytest.raises(CorruptState, match="counter:bad"):
            await rt.get(Counter, "bad").get()
        assert await rt.get(Counter, "good").get() == 2
