"""Operator actions are turns: edits (JSON Patch under a rev) and restores, on the owner.

On memory, SQLite and PostgreSQL: an edit against a stale rev, an edit that breaks the model,
restores by rev and by time (kept history, and event-sourced objects from their journal),
history pruning, and, on a cluster, a restore, an edit and a look at the connections sent to
the owner.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel, Field

from fastapi_objects import InvalidEdit, ObjectNotFound, StaleRevision, UnstorableValue
from fastapi_objects.runtime import DurableObject, EventSourced, Runtime, readonly
from fastapi_objects.runtime.states import read_state
from fastapi_objects.storage import open_storage
from tests._support import Recorder

if TYPE_CHECKING:
    from conftest import Backend


class Profile(BaseModel):
    name: str = "ann"
    score: int = Field(default=0, ge=0)
    tags: list[str] = []


class Player(DurableObject[Profile]):
    history = timedelta(days=7)

    async def score_up(self, by: int = 1) -> int:
        self.state.score += by
        self.broadcast("scored", {"score": self.state.score})
        return self.state.score

    @readonly
    async def profile(self) -> dict[str, Any]:
        return self.state.model_dump()


class Plain(DurableObject[Profile]):
    """The same state, no history option: nothing extra is stored."""

    async def score_up(self, by: int = 1) -> int:
        self.state.score += by
        return self.state.score


class Fleeting(DurableObject[Profile]):
    """A memory object: nothing written, so nothing an operator can edit or restore."""

    persistence = "memory"

    async def score_up(self, by: int = 1) -> int:
        self.state.score += by
        return self.state.score


class Short(DurableObject[Profile]):
    """States kept for one second: pruned while the test watches."""

    history = timedelta(seconds=1)

    async def score_up(self, by: int = 1) -> int:
        self.state.score += by
        return self.state.score


class Ledger(BaseModel):
    total: int = 0
    notes: list[str] = []


class Added(BaseModel):
    amount: int


class Till(EventSourced[Ledger, Added]):
    snapshot_every = 2

    @staticmethod
    def apply(state: Ledger, event: Added) -> Ledger:
        return Ledger(total=state.total + event.amount, notes=state.notes)

    async def add(self, amount: int) -> int:
        self.emit(Added(amount=amount))
        return self.state.total

    @readonly
    async def total(self) -> int:
        return self.state.total


TYPES: list[type[DurableObject[Any]]] = [Player, Plain, Short, Till, Fleeting]


def _runtime(backend: Backend, **options: Any) -> Runtime:
    return Runtime(
        objects=TYPES, database_url=backend.url, schema=backend.schema, create_tables=True,
        **options,
    )


@pytest.fixture
async def rt(backend: Backend) -> AsyncIterator[Runtime]:
    async with _runtime(backend) as runtime:
        yield runtime


async def _rev(rt: Runtime, cls: type[DurableObject[Any]], key: str) -> int:
    cp = await rt.storage.load(cls.type_name, key)
    assert cp is not None
    return cp.rev


async def _scored(rt: Runtime, key: str, times: int, cls: type[Any] = Player) -> None:
    for _ in range(times):
        await rt.get(cls, key).score_up()
        await asyncio.sleep(0.002)  # distinct commit times, for the restores by time


# -- edits -------------------------------------------------------------------------------------


async def test_an_edit_is_a_journaled_turn_that_clients_hear(rt: Runtime) -> None:
    await _scored(rt, "a", 3)
    async with rt.subscribe("player:a") as sub:
        patch = [{"op": "replace", "path": "/score", "value": 10},
                 {"op": "add", "path": "/tags/-", "value": "vip"}]
        done = await rt.edit(Player, "a", patch, rev=3, by="admin@example.com")
        assert done == {"rev": 4, "state": {"name": "ann", "score": 10, "tags": ["vip"]}}
        heard = await asyncio.wait_for(sub.__anext__(), 5)
    assert (heard.event, heard.payload) == ("objects:edit", {"rev": 4})
    assert await rt.get(Player, "a").profile() == done["state"]  # the live instance has it
    (entry,) = await rt.journal(Player, "a")
    assert entry.rev == 1 and entry.kind == "objects:edit"
    assert entry.payload == {
        "patch": patch, "by": "admin@example.com",
        "undo": [{"op": "replace", "path": "/score", "value": 3},
                 {"op": "remove", "path": "/tags/0"}],
    }
    assert await _rev(rt, Player, "a") == 4
    # The edit is undoable: its undo patch, as another edit.
    undone = await rt.edit(Player, "a", entry.payload["undo"], rev=4, by="admin@example.com")
    assert undone["state"] == {"name": "ann", "score": 3, "tags": []}


async def test_an_edit_against_a_stale_rev_changes_nothing(rt: Runtime) -> None:
    await _scored(rt, "a", 3)
    with pytest.raises(StaleRevision, match="at rev 3, not 2"):
        await rt.edit(Player, "a", [{"op": "replace", "path": "/score", "value": 0}], rev=2)
    assert await rt.get(Player, "a").profile() == {"name": "ann", "score": 3, "tags": []}
    assert await rt.journal(Player, "a") == []
    assert await _rev(rt, Player, "a") == 3
    assert await rt.get(Player, "a").score_up() == 4  # and it serves on


@pytest.mark.parametrize(("patch", "why"), [
    ([{"op": "replace", "path": "/score", "value": "many"}], "score: Input should be"),
    ([{"op": "replace", "path": "/score", "value": -1}], "greater than or equal to 0"),
    ([{"op": "replace", "path": "", "value": [1, 2]}], "does not fit Profile"),
    ([{"op": "remove", "path": "/nope"}], "does not apply"),
    ([{"op": "add", "path": "/tags/7", "value": "x"}], "does not apply"),
    ([{"op": "test", "path": "/score", "value": 99}], "does not apply"),
    ([{"op": "move", "from": "/tags", "path": "/tags/0"}], "does not apply"),
    ({"op": "replace"}, "JSON array of operations"),
    ([["replace", "/score", 1]], "is not a JSON object"),
    ([{"op": "frobnicate", "path": "/score"}], "op must be one of"),
    ([{"op": "replace", "path": "/score"}], "needs 'value'"),
    ([{"op": "copy", "path": "/name"}], "needs 'from'"),
    ([{"op": "remove", "path": "score"}], "is not a JSON Pointer"),
    ([{"op": "remove", "path": 7}], "JSON Pointer string"),
    ([{"op": "remove", "path": "/tags"}] * 1001, "at most 1000"),
])
async def test_an_edit_that_breaks_the_model_or_is_malformed_changes_nothing(
    rt: Runtime, patch: Any, why: str
) -> None:
    await _scored(rt, "a", 2)
    with pytest.raises(InvalidEdit, match=why):
        await rt.edit(Player, "a", patch, rev=2)
    assert await rt.get(Player, "a").profile() == {"name": "ann", "score": 2, "tags": []}
    assert await rt.journal(Player, "a") == []
    assert await _rev(rt, Player, "a") == 2


async def test_an_unstorable_edit_is_refused(rt: Runtime) -> None:
    await _scored(rt, "a", 1)
    for value in (math.nan, "nul\x00", 10**5000):
        with pytest.raises(UnstorableValue):
            await rt.edit(Player, "a", [{"op": "replace", "path": "/name", "value": value}], rev=1)
    with pytest.raises(InvalidEdit, match="at least 1"):
        await rt.edit(Player, "a", [], rev=0)
    assert await _rev(rt, Player, "a") == 1


# -- history and restore -------------------------------------------------------------------------


async def test_restore_by_rev_and_by_time_and_undo_it(rt: Runtime) -> None:
    await _scored(rt, "a", 5)  # revs 1..5 hold scores 1..5
    kept = await rt.history(Player, "a")
    assert [k.rev for k in kept] == [5, 4, 3, 2, 1]
    async with rt.subscribe("player:a") as sub:
        done = await rt.restore(Player, "a", rev=2, by="ops")
        heard = await asyncio.wait_for(sub.__anext__(), 5)
    assert done == {"rev": 6, "restored": 2, "state": {"name": "ann", "score": 2, "tags": []}}
    assert (heard.event, heard.payload) == ("objects:restore", {"rev": 6, "restored": 2})
    assert await rt.get(Player, "a").profile() == done["state"]
    (entry,) = await rt.journal(Player, "a")
    assert entry.kind == "objects:restore" and entry.payload["rev"] == 2
    assert entry.payload["by"] == "ops"
    assert entry.payload["patch"] == [{"op": "replace", "path": "/score", "value": 2}]

    # Restoring is itself kept, and undoable: back to rev 5 (before the restore).
    assert [k.rev for k in await rt.history(Player, "a", limit=2)] == [6, 5]
    assert (await rt.restore(Player, "a", rev=5))["state"]["score"] == 5

    third = next(k for k in kept if k.rev == 3)
    by_time = await rt.restore(Player, "a", at=third.at + timedelta(microseconds=1))
    assert (by_time["restored"], by_time["state"]["score"]) == (3, 3)
    naive = third.at.replace(tzinfo=None).isoformat()  # text, no offset: UTC
    assert (await rt.restore(Player, "a", at=naive))["restored"] == 3
    assert await rt.get(Player, "a").score_up() == 4  # it serves on from the restored state


async def test_restores_that_cannot_be_are_refused(rt: Runtime) -> None:
    await _scored(rt, "a", 2)
    first = (await rt.history(Player, "a"))[-1]
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"rev": 9}, InvalidEdit, "at rev 2; no rev 9"),
        ({"rev": 0}, InvalidEdit, "at least 1"),
        ({"at": first.at - timedelta(seconds=1)}, ObjectNotFound, "no state kept"),
        ({"at": "yesterday"}, InvalidEdit, "ISO 8601"),
        ({}, InvalidEdit, "one of rev= and at="),
        ({"rev": 1, "at": first.at}, InvalidEdit, "one of rev= and at="),
    ]
    for kwargs, error, why in cases:
        with pytest.raises(error, match=why):
            await rt.restore(Player, "a", **kwargs)
    await _scored(rt, "p", 2, Plain)
    with pytest.raises(InvalidEdit, match="keeps no history"):
        await rt.restore(Plain, "p", rev=1)
    await rt.get(Fleeting, "m").score_up()
    for refused in (rt.restore(Fleeting, "m", rev=1),
                    rt.edit(Fleeting, "m", [{"op": "remove", "path": "/tags"}], rev=1)):
        with pytest.raises(InvalidEdit, match="is a memory object"):
            await refused
    assert await _rev(rt, Player, "a") == 2 and await rt.journal(Player, "a") == []


async def test_nothing_is_kept_without_the_option(rt: Runtime, backend: Backend) -> None:
    await _scored(rt, "p", 3, Plain)
    assert await rt.history(Plain, "p") == []
    if backend.name != "memory":  # not a row of it in the table
        import sqlalchemy as sa

        storage = open_storage(backend.url, schema=backend.schema)
        try:
            history = storage.metadata.tables[  # type: ignore[attr-defined]
                f"{backend.schema}.objects_history" if backend.schema else "objects_history"
            ]
            async with storage.engine.connect() as conn:  # type: ignore[attr-defined]
                count = await conn.scalar(sa.select(sa.func.count()).select_from(history))
            assert count == 0
        finally:
            await storage.close()


async def test_history_is_pruned_past_its_window(rt: Runtime) -> None:
    await _scored(rt, "s", 4, Short)
    assert [k.rev for k in await rt.history(Short, "s")] == [4, 3, 2, 1]
    # The node's pruner runs every second and drops states older than one; the newest stays.
    found: list[int] = []

    async def pruned() -> bool:
        found[:] = [k.rev for k in await rt.history(Short, "s")]
        return found == [4]

    deadline = asyncio.get_running_loop().time() + 20
    while not await pruned():
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.1)
    with pytest.raises(ObjectNotFound, match="no state kept at or before rev 3"):
        await rt.restore(Short, "s", rev=3)  # older than the window: gone
    assert (await rt.restore(Short, "s", rev=4))["state"]["score"] == 4


async def test_event_sourced_objects_restore_from_their_journal(rt: Runtime) -> None:
    for amount in (1, 10, 100, 1000):  # journal revs 1..4; a snapshot at 1 and at 3
        await rt.get(Till, "t").add(amount)
        await asyncio.sleep(0.002)
    entries = await rt.journal(Till, "t")
    assert (await rt.restore(Till, "t", rev=3))["state"]["total"] == 111  # the snapshot
    assert (await rt.restore(Till, "t", rev=1))["state"]["total"] == 1  # from the start
    by_time = await rt.restore(Till, "t", at=entries[1].at)
    assert (by_time["restored"], by_time["state"]["total"]) == (2, 11)
    with pytest.raises(ObjectNotFound, match="no journal entry"):
        await rt.restore(Till, "t", at=entries[0].at - timedelta(seconds=1))
    with pytest.raises(InvalidEdit, match="journal ends at rev 7"):
        await rt.restore(Till, "t", rev=8)
    # Edits and restores are journaled with the patch they made: replaying the journal after
    # the snapshot (what a thaw does, and what the inspector reads) makes the same state.
    edited = await rt.edit(Till, "t", [{"op": "add", "path": "/notes/-", "value": "audit"}],
                           rev=await _rev(rt, Till, "t"))
    assert edited["state"] == {"total": 11, "notes": ["audit"]}
    cp = await rt.storage.load("till", "t")
    assert cp is not None and cp.snapshot_rev == 3  # entries 4..8 to replay
    stored = await read_state(rt.storage, Till, "t")
    assert stored is not None and stored[1].model_dump() == edited["state"]
    assert (await rt.restore(Till, "t", rev=8))["state"] == edited["state"]
    assert (await rt.restore(Till, "t", rev=4))["state"] == {"total": 1111, "notes": []}
    assert await rt.get(Till, "t").add(5) == 1116


def test_history_is_a_positive_timedelta_of_snapshot_objects() -> None:
    with pytest.raises(TypeError, match="positive timedelta"):
        class Bad(DurableObject[Profile]):
            history = 7  # type: ignore[assignment]
    with pytest.raises(TypeError, match="positive timedelta"):
        class Zero(DurableObject[Profile]):
            history = timedelta(0)
    with pytest.raises(TypeError, match="restore from their journal"):
        class Sourced(Till):
            history = timedelta(days=1)

    with pytest.raises(TypeError, match="memory object keeps nothing"):
        class Fleeting(DurableObject[Profile]):
            persistence = "memory"
            history = timedelta(days=1)

    class Chat(DurableObject[Profile]):  # a method named history is the app's own
        async def history(self) -> list[str]:
            return self.state.tags

    assert Chat.__objects_history__ is None and "history" in Chat.__objects_methods__
    assert Player.__objects_history__ == timedelta(days=7)


# -- on a cluster --------------------------------------------------------------------------------


async def test_a_restore_and_an_edit_on_another_node_run_on_the_owner(
    sql_backend: Backend,
) -> None:
    async with _runtime(sql_backend, node_id="a") as a, _runtime(sql_backend, node_id="b") as b:
        await _scored(a, "k", 3)  # a owns player:k
        conn = await a.gateway.attach(Player, "k", Recorder(), query={"name": "viewer"})
        conn.tags.add("watcher")
        conn.state = {"seat": 4}
        # b asks a who is attached, without waking anything of its own.
        (seen,) = await b.connections(Player, "k")
        assert seen == {"id": conn.id, "tags": ["watcher"], "state": {"seat": 4}}
        assert await b.connections(Player, "nobody") == []
        assert ("player", "k") not in b._host.activations

        forwarded = b.stats().forwarded
        heard = a.subscribe("player:k")  # broadcasts leave from the owner
        await heard.__aenter__()
        done = await b.restore(Player, "k", rev=1, by="ops")
        assert (done["rev"], done["state"]["score"]) == (4, 1)
        edit = [{"op": "replace", "path": "/name", "value": "bo"}]
        assert (await b.edit(Player, "k", edit, rev=4))["rev"] == 5
        with pytest.raises(StaleRevision):  # the owner's error, across nodes
            await b.edit(Player, "k", edit, rev=4)
        with pytest.raises(InvalidEdit, match="does not fit"):
            await b.edit(Player, "k", [{"op": "replace", "path": "", "value": 1}], rev=5)
        assert b.stats().forwarded == forwarded + 4
        assert ("player", "k") not in b._host.activations
        # The owner's live instance changed, and its clients heard both, after the commits.
        assert await a.get(Player, "k").profile() == {"name": "bo", "score": 1, "tags": []}
        messages = [await asyncio.wait_for(heard.__anext__(), 5) for _ in range(2)]
        await heard.__aexit__(None, None, None)
        assert [(m.event, m.payload) for m in messages] == [
            ("objects:restore", {"rev": 4, "restored": 1}), ("objects:edit", {"rev": 5})
        ]
        await a.gateway.detach(conn)
