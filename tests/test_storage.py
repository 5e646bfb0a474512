"""The storage contract, on Storage directly: one suite for memory, SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic_core import to_json

from fastapi_objects.storage import (
    Checkpoint,
    Commit,
    ObjectQuery,
    StatusUpdate,
    Storage,
    TypeStats,
    open_storage,
)

if TYPE_CHECKING:
    from conftest import Backend


def _create(
    key: str,
    state: Any = None,
    *,
    type: str = "counter",
    entries: list[tuple[str, Any]] | None = None,
    state_version: int = 1,
) -> Commit:
    entries = entries or []
    return Commit(
        type=type, key=key, expected_rev=0, new_rev=1,
        state=to_json({"value": 0} if state is None else state), state_version=state_version,
        snapshot_rev=len(entries), journal_rev=len(entries),
        entries=[(kind, to_json(payload)) for kind, payload in entries],
    )


def _next(
    cp: Checkpoint, state: Any, entries: list[tuple[str, Any]] | None = None, **kw: Any
) -> Commit:
    """The commit that builds on ``cp`` (a snapshot-style turn unless ``state`` is None)."""
    entries = entries or []
    journal_rev = cp.journal_rev + len(entries)
    return Commit(
        type=cp.type, key=cp.key, expected_rev=kw.get("expected_rev", cp.rev),
        new_rev=cp.rev + 1, state=None if state is None else to_json(state),
        state_version=kw.get("state_version", 1),
        snapshot_rev=journal_rev if state is not None else cp.snapshot_rev,
        journal_rev=journal_rev, entries=[(kind, to_json(payload)) for kind, payload in entries],
    )


async def _load(storage: Storage, key: str, type: str = "counter") -> Checkpoint:
    cp = await storage.load(type, key)
    assert cp is not None, f"{type}:{key} was not stored"
    return cp


async def test_load_missing_returns_none(storage: Storage) -> None:
    assert await storage.load("counter", "nope") is None
    assert await storage.read_journal("counter", "nope") == []


async def test_create_then_load(storage: Storage) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    state = {"value": 7, "nested": {"list": [1, "two", None, 3.5, True]}, "text": "héllo ✓"}
    ok = await storage.commit([_create("a", state, state_version=3)])
    assert ok == [True]
    cp = await _load(storage, "a")
    assert (cp.type, cp.key, cp.rev, cp.journal_rev, cp.snapshot_rev) == ("counter", "a", 1, 0, 0)
    assert cp.state == state
    assert cp.state_version == 3
    assert cp.status == "active"
    assert cp.metadata == {}
    after = datetime.now(UTC) + timedelta(seconds=5)
    assert cp.created_at.tzinfo is not None and cp.updated_at.tzinfo is not None
    assert before < cp.created_at <= cp.updated_at < after


async def test_loaded_values_are_copies(storage: Storage) -> None:
    await storage.commit([_create("a", {"items": [1]})])
    cp = await _load(storage, "a")
    cp.state["items"].append(2)
    assert (await _load(storage, "a")).state == {"items": [1]}


async def test_update_bumps_rev_and_keeps_created_at(storage: Storage) -> None:
    await storage.commit([_create("a")])
    first = await _load(storage, "a")
    assert await storage.commit([_next(first, {"value": 1})]) == [True]
    second = await _load(storage, "a")
    assert second.rev == 2
    assert second.state == {"value": 1}
    assert second.created_at == first.created_at
    assert second.updated_at >= first.updated_at


async def test_fenced_commit_rejects_wrong_expected_rev_and_keeps_others(storage: Storage) -> None:
    await storage.commit([_create("a"), _create("b"), _create("c")])
    a, b, c = [await _load(storage, k) for k in "abc"]
    stale = _next(b, {"value": 666}, [("inc", 666)], expected_rev=b.rev + 5)
    ok = await storage.commit(
        [_next(a, {"value": 1}, [("inc", 1)]), stale, _next(c, {"value": 3}, [("inc", 3)])]
    )
    assert ok == [True, False, True]
    assert (await _load(storage, "a")).state == {"value": 1}
    assert (await _load(storage, "c")).state == {"value": 3}
    b_after = await _load(storage, "b")
    assert (b_after.rev, b_after.journal_rev, b_after.state) == (1, 0, {"value": 0})
    assert await storage.read_journal("counter", "b") == []
    assert [e.payload for e in await storage.read_journal("counter", "c")] == [3]


async def test_replaying_the_same_commit_is_rejected(storage: Storage) -> None:
    """A commit applied once cannot be applied again (no double application on retry)."""
    await storage.commit([_create("a")])
    commit = _next(await _load(storage, "a"), {"value": 1}, [("inc", 1)])
    assert await storage.commit([commit]) == [True]
    assert await storage.commit([commit]) == [False]
    cp = await _load(storage, "a")
    assert (cp.rev, cp.journal_rev) == (2, 1)
    assert len(await storage.read_journal("counter", "a")) == 1


async def test_create_conflict(storage: Storage) -> None:
    assert await storage.commit([_create("a", {"value": 1}, entries=[("x", 1)])]) == [True]
    loser = _create("a", {"value": 2}, entries=[("x", 2)])
    assert await storage.commit([loser, _create("b")]) == [False, True]
    cp = await _load(storage, "a")
    assert (cp.rev, cp.state) == (1, {"value": 1})
    assert [e.payload for e in await storage.read_journal("counter", "a")] == [1]
    assert await storage.load("counter", "b") is not None


async def test_same_key_in_two_types_are_two_objects(storage: Storage) -> None:
    ok = await storage.commit([_create("a", {"v": 1}), _create("a", {"v": 2}, type="room")])
    assert ok == [True, True]
    assert (await _load(storage, "a")).state == {"v": 1}
    assert (await _load(storage, "a", "room")).state == {"v": 2}


async def test_journal_is_contiguous_and_pages(storage: Storage) -> None:
    await storage.commit([_create("a", entries=[("created", {"by": "me"})])])
    cp = await _load(storage, "a")
    for i in range(1, 5):
        entries = [("inc", {"i": i, "part": p}) for p in range(i)]  # 1, 2, 3, 4 entries per turn
        assert await storage.commit([_next(cp, {"value": i}, entries)]) == [True]
        cp = await _load(storage, "a")
    assert cp.journal_rev == 1 + 1 + 2 + 3 + 4
    journal = await storage.read_journal("counter", "a")
    assert [e.rev for e in journal] == list(range(1, cp.journal_rev + 1))
    assert journal[0].kind == "created" and journal[0].payload == {"by": "me"}
    assert [e.payload for e in journal[1:4]] == [
        {"i": 1, "part": 0}, {"i": 2, "part": 0}, {"i": 2, "part": 1}
    ]
    assert all(e.at.tzinfo is not None for e in journal)
    page = await storage.read_journal("counter", "a", after_rev=3, limit=4)
    assert [e.rev for e in page] == [4, 5, 6, 7]
    assert [e.rev for e in await storage.read_journal("counter", "a", after_rev=9)] == [10, 11]
    assert await storage.read_journal("counter", "a", after_rev=11) == []
    assert await storage.read_journal("counter", "a", after_rev=0, limit=0) == []


async def test_journal_only_commit_keeps_state_and_state_version(storage: Storage) -> None:
    await storage.commit([_create("a", {"total": 10}, entries=[("event", 10)], state_version=4)])
    cp = await _load(storage, "a")
    ok = await storage.commit([_next(cp, None, [("event", 5), ("event", 7)], state_version=None)])
    assert ok == [True]
    after = await _load(storage, "a")
    assert after.state == {"total": 10}
    assert after.state_version == 4
    assert (after.rev, after.journal_rev, after.snapshot_rev) == (2, 3, 1)
    assert [e.payload for e in await storage.read_journal("counter", "a", after_rev=1)] == [5, 7]
    # In one batch with a snapshot commit of another object (one statement on PostgreSQL).
    await storage.commit([_create("b", {"total": 1}, state_version=2)])
    b = await _load(storage, "b")
    ok = await storage.commit(
        [
            _next(after, None, [("event", 1)], state_version=None),
            _next(b, {"total": 2}, [], state_version=5),
        ]
    )
    assert ok == [True, True]
    a2, b2 = await _load(storage, "a"), await _load(storage, "b")
    assert (a2.state, a2.state_version, a2.rev, a2.journal_rev) == ({"total": 10}, 4, 3, 4)
    assert (b2.state, b2.state_version, b2.rev) == ({"total": 2}, 5, 2)


async def test_status_updates(storage: Storage) -> None:
    await storage.commit([_create("a"), _create("b")])
    hibernate = [StatusUpdate("counter", k, "hibernated") for k in ("a", "zz")]
    ok = await storage.commit([], hibernate)
    assert ok == []
    a = await _load(storage, "a")
    assert a.status == "hibernated"
    assert a.rev == 1  # a status change is not a turn
    assert (await _load(storage, "b")).status == "active"
    assert await storage.load("counter", "zz") is None  # a status never creates an object
    # A commit leaves the stored status alone: what lists an object active again is a node
    # holding it (its owner row, tests/test_thaw.py), and a commit needs no index write.
    assert await storage.commit([_next(a, {"value": 1})]) == [True]
    again = await _load(storage, "a")
    assert (again.status, again.rev, again.state) == ("hibernated", 2, {"value": 1})


async def test_status_updates_apply_beside_commits(storage: Storage) -> None:
    await storage.commit([_create("a"), _create("b")])
    a = await _load(storage, "a")
    ok = await storage.commit(
        [_next(a, {"value": 1})], [StatusUpdate("counter", "b", "hibernated")]
    )
    assert ok == [True]
    assert (await _load(storage, "b")).status == "hibernated"


async def _seed(storage: Storage, keys: list[str], type: str = "counter") -> None:
    assert all(await storage.commit([_create(k, {"k": k}, type=type) for k in keys]))


async def _all_keys(storage: Storage, query: ObjectQuery) -> list[tuple[str, str]]:
    page = await storage.query(query)
    return [(cp.type, cp.key) for cp in page.items]


async def test_query_filters(storage: Storage) -> None:
    await _seed(storage, ["user:1", "user:10", "user:2", "user", "userx", "admin:1"])
    await _seed(storage, ["user:1", "room:9"], type="room")
    await storage.commit([], [StatusUpdate("counter", "user:10", "hibernated")])

    everything = await _all_keys(storage, ObjectQuery())
    assert everything == sorted(everything)
    assert len(everything) == 8

    assert await _all_keys(storage, ObjectQuery(type="room")) == [
        ("room", "room:9"), ("room", "user:1")
    ]
    # "user" is a prefix of every "user:*" key and of "userx"; "user:1" of "user:10".
    async def prefixed(prefix: str) -> list[str]:
        query = ObjectQuery(type="counter", key_prefix=prefix)
        return [k for _, k in await _all_keys(storage, query)]

    assert await prefixed("user") == ["user", "user:1", "user:10", "user:2", "userx"]
    assert await prefixed("user:") == ["user:1", "user:10", "user:2"]
    assert await prefixed("user:1") == ["user:1", "user:10"]
    assert await prefixed("user:10") == ["user:10"]
    assert await prefixed("") == ["admin:1", "user", "user:1", "user:10", "user:2", "userx"]
    assert await _all_keys(storage, ObjectQuery(key_prefix="nobody")) == []
    assert await _all_keys(storage, ObjectQuery(type="counter", status="hibernated")) == [
        ("counter", "user:10")
    ]
    active = await _all_keys(storage, ObjectQuery(type="counter", status="active"))
    assert len(active) == 5 and ("counter", "user:10") not in active
    both = await _all_keys(storage, ObjectQuery(status_in=("active", "hibernated")))
    assert both == everything
    assert await _all_keys(storage, ObjectQuery(status_in=("hibernated",))) == [
        ("counter", "user:10")
    ]
    assert await _all_keys(storage, ObjectQuery(status_in=())) == []


async def test_query_state_version(storage: Storage) -> None:
    await storage.commit([_create("old", state_version=1), _create("new", state_version=2)])
    assert await _all_keys(storage, ObjectQuery(state_version=1)) == [("counter", "old")]
    assert await _all_keys(storage, ObjectQuery(state_version=2)) == [("counter", "new")]
    assert await _all_keys(storage, ObjectQuery(state_version=3)) == []


async def test_query_updated_after_and_before(storage: Storage) -> None:
    await _seed(storage, ["early"])
    early = await _load(storage, "early")
    cut = early.updated_at + timedelta(milliseconds=1)
    while datetime.now(UTC) <= cut + timedelta(milliseconds=1):
        pass  # the next commit must be stamped strictly after `cut`
    await _seed(storage, ["late"])
    late = await _load(storage, "late")
    assert late.updated_at > cut
    assert await _all_keys(storage, ObjectQuery(updated_after=cut)) == [("counter", "late")]
    assert await _all_keys(storage, ObjectQuery(updated_before=cut)) == [("counter", "early")]
    window = ObjectQuery(updated_after=early.updated_at - timedelta(seconds=1),
                         updated_before=late.updated_at + timedelta(seconds=1))
    assert await _all_keys(storage, window) == [("counter", "early"), ("counter", "late")]
    # The same instant written in another time zone selects the same objects.
    cut_plus2 = cut.astimezone(timezone(timedelta(hours=2)))
    assert await _all_keys(storage, ObjectQuery(updated_after=cut_plus2)) == [("counter", "late")]
    cut_minus5 = cut.astimezone(timezone(timedelta(hours=-5)))
    assert await _all_keys(storage, ObjectQuery(updated_before=cut_minus5)) == [
        ("counter", "early")
    ]


async def test_query_pages_with_cursor_in_stable_order(storage: Storage) -> None:
    keys = [f"k{i:03d}" for i in range(23)] + ["k00", "k0", "k"]
    await _seed(storage, keys)
    await _seed(storage, ["k001"], type="alpha")  # sorts before every "counter" row
    await _seed(storage, ["a"], type="zeta")
    seen: list[tuple[str, str]] = []
    cursor = None
    pages = 0
    while True:
        page = await storage.query(ObjectQuery(type="counter", limit=5, cursor=cursor))
        pages += 1
        assert len(page.items) <= 5
        seen += [(cp.type, cp.key) for cp in page.items]
        if page.next_cursor is None:
            break
        assert len(page.items) == 5
        cursor = page.next_cursor
    assert pages == 6  # 26 rows: five full pages and one of one
    assert seen == [("counter", k) for k in sorted(keys)]
    # Without a type filter the order is (type, key) across types, and paging still covers all.
    cursor, every = None, []
    while True:
        page = await storage.query(ObjectQuery(limit=7, cursor=cursor))
        every += [(cp.type, cp.key) for cp in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert every == [("alpha", "k001")] + [("counter", k) for k in sorted(keys)] + [("zeta", "a")]


async def test_query_exact_page_has_no_next_cursor(storage: Storage) -> None:
    await _seed(storage, ["a", "b", "c"])
    page = await storage.query(ObjectQuery(limit=3))
    assert len(page.items) == 3 and page.next_cursor is None
    page = await storage.query(ObjectQuery(limit=2))
    assert [cp.key for cp in page.items] == ["a", "b"] and page.next_cursor is not None
    rest = await storage.query(ObjectQuery(limit=2, cursor=page.next_cursor))
    assert [cp.key for cp in rest.items] == ["c"] and rest.next_cursor is None


async def test_query_cursor_survives_new_rows(storage: Storage) -> None:
    """Rows inserted before the cursor are not repeated; rows after it appear."""
    await _seed(storage, ["b", "d", "f"])
    page = await storage.query(ObjectQuery(limit=2))
    assert [cp.key for cp in page.items] == ["b", "d"]
    await _seed(storage, ["a", "c", "e"])
    rest = await storage.query(ObjectQuery(limit=10, cursor=page.next_cursor))
    assert [cp.key for cp in rest.items] == ["e", "f"]


async def test_malformed_cursor_is_a_value_error(storage: Storage) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await storage.query(ObjectQuery(cursor="%%%not-a-cursor"))


async def test_stats(storage: Storage) -> None:
    assert await storage.stats() == []
    await _seed(storage, ["a", "b", "c"])
    await _seed(storage, ["x"], type="room")
    await storage.commit([], [StatusUpdate("counter", "b", "hibernated")])
    assert await storage.stats() == [
        TypeStats("counter", "active", 2),
        TypeStats("counter", "hibernated", 1),
        TypeStats("room", "active", 1),
    ]


async def test_delete(storage: Storage) -> None:
    await storage.commit([_create("a", entries=[("x", 1)]), _create("ab", entries=[("x", 2)])])
    assert await storage.delete("counter", "a") is True
    assert await storage.load("counter", "a") is None
    assert await storage.read_journal("counter", "a") == []
    assert await storage.delete("counter", "a") is False
    assert await storage.delete("room", "ab") is False
    # Neighbours (a key that extends the deleted one) are untouched.
    assert (await _load(storage, "ab")).rev == 1
    assert len(await storage.read_journal("counter", "ab")) == 1
    # A deleted object can be created again from rev 0, with a fresh journal.
    assert await storage.commit([_create("a", {"value": 9}, entries=[("y", 9)])]) == [True]
    assert [(e.rev, e.kind) for e in await storage.read_journal("counter", "a")] == [(1, "y")]


async def test_create_tables_is_idempotent(storage: Storage, backend: Backend) -> None:
    await storage.commit([_create("a", {"value": 5})])
    await storage.create_tables()
    await storage.create_tables()
    assert (await _load(storage, "a")).state == {"value": 5}
    if backend.name == "memory":
        return
    other = open_storage(backend.url, schema=backend.schema)
    try:
        await other.create_tables()
        assert (await _load(other, "a")).state == {"value": 5}
    finally:
        await other.close()


async def test_nodes_starting_at_once_all_create_the_tables(
    sql_backend: Backend, tmp_path: Path
) -> None:
    """Nodes starting together on a fresh database (``uvicorn --workers N``, a fleet's first
    deploy) race to create the schema and the tables: every one of them starts, each time."""
    import asyncio
    import uuid

    for round in range(4):
        if sql_backend.name == "sqlite":
            url, schema = f"sqlite+aiosqlite:///{tmp_path / f'race{round}.db'}", None
        else:  # a schema nobody made yet: its CREATE SCHEMA races too
            url, schema = sql_backend.url, f"t_{uuid.uuid4().hex[:12]}"
        stores = [open_storage(url, schema=schema) for _ in range(6)]
        try:
            await asyncio.gather(*(store.create_tables() for store in stores))
            assert await stores[0].commit([_create("a", {"value": round})]) == [True]
            assert (await _load(stores[-1], "a")).state == {"value": round}
        finally:
            for store in stores:
                await store.close()
            if schema is not None:
                import asyncpg

                conn = await asyncpg.connect(url.replace("+asyncpg", ""))
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                await conn.close()


async def test_commits_are_durable_for_a_second_connection(
    storage: Storage, backend: Backend
) -> None:
    if backend.name == "memory":
        pytest.skip("memory storage lives in one process")
    await storage.commit([_create("a", {"value": 1}, entries=[("x", 1)])])
    other = open_storage(backend.url, schema=backend.schema)
    try:
        cp = await _load(other, "a")
        assert (cp.rev, cp.state) == (1, {"value": 1})
        assert len(await other.read_journal("counter", "a")) == 1
    finally:
        await other.close()


async def test_large_batches_are_chunked_in_one_commit(storage: Storage) -> None:
    n = 950  # over two chunks of 400
    keys = [f"obj-{i:04d}" for i in range(n)]
    creates = [_create(k, {"i": i}, entries=[("created", i)]) for i, k in enumerate(keys)]
    assert await storage.commit(creates) == [True] * n
    cps = {k: await _load(storage, k) for k in keys}
    updates = [
        _next(cps[k], {"i": i + 1}, [("inc", i), ("inc", -i)])
        for i, k in enumerate(keys)
    ]
    updates[123].expected_rev = 99  # one fenced-out commit among many, in a late chunk too
    updates[901].expected_rev = 0
    statuses = [StatusUpdate("counter", k, "hibernated") for k in keys[:450]]
    ok = await storage.commit(updates, statuses)
    assert ok == [i not in (123, 901) for i in range(n)]
    for i, k in enumerate(keys):
        cp = await _load(storage, k)
        if i in (123, 901):
            assert (cp.rev, cp.journal_rev, cp.state) == (1, 1, {"i": i})
        else:
            assert (cp.rev, cp.journal_rev, cp.state) == (2, 3, {"i": i + 1})
    assert len(await storage.read_journal("counter", keys[123])) == 1
    assert [e.payload for e in await storage.read_journal("counter", keys[900])] == [900, 900, -900]
    page = await storage.query(ObjectQuery(status="hibernated", limit=1000))
    assert len(page.items) == 450
    total = sum(s.count for s in await storage.stats())
    assert total == n


async def test_batches_over_the_same_objects_in_opposite_orders_do_not_deadlock(
    storage: Storage, backend: Backend
) -> None:
    """Two writers (nodes) whose batches name the same objects in opposite orders."""
    if backend.name != "postgres":
        pytest.skip("SQLite has one writer at a time; memory has no transactions")
    import asyncio

    import asyncpg  # type: ignore[import-untyped]

    keys = ["k0", "k1", "k2"]
    await storage.commit([_create(k) for k in keys])
    cps = {k: await _load(storage, k) for k in keys}
    other = open_storage(backend.url, schema=backend.schema)
    blocker = await asyncpg.connect(backend.url.replace("+asyncpg", ""))
    try:
        # A third transaction holds k2, so both writers stop half-way through their batch.
        tx = blocker.transaction()
        await tx.start()
        table = f'"{backend.schema}".objects_checkpoints'
        await blocker.execute(f"SELECT 1 FROM {table} WHERE key = 'k2' FOR UPDATE")
        one = asyncio.create_task(
            storage.commit([_next(cps[k], {"value": 1}) for k in ("k0", "k2", "k1")])
        )
        two = asyncio.create_task(
            other.commit([_next(cps[k], {"value": 2}) for k in ("k1", "k2", "k0")])
        )
        for _ in range(500):
            await blocker.execute("SELECT pg_stat_clear_snapshot()")  # else cached per transaction
            waiting = await blocker.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database() AND pid <> pg_backend_pid()"
            )
            if waiting >= 2:
                break
            await asyncio.sleep(0.01)
        assert waiting >= 2, "both writers should be waiting for a lock"
        await tx.rollback()
        results = await asyncio.gather(one, two)  # a deadlock raises StorageUnavailable
    finally:
        await blocker.close()
        await other.close()
    assert sorted(results) == [[False] * 3, [True] * 3]
    winner = 1 if results[0] == [True] * 3 else 2
    assert [(await _load(storage, k)).state for k in keys] == [{"value": winner}] * 3
