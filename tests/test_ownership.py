"""The ownership contract (nodes, claims, epochs, the commit fence) on memory, SQLite, PostgreSQL.

One suite for every backend, on ``Storage`` directly: what the cluster layer builds on.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pydantic_core import to_json

from fastapi_objects.cluster import ClusterNode
from fastapi_objects.storage import Commit, NodeProcess, StatusUpdate, Storage, open_storage
from fastapi_objects.storage.sql import SQLStorage

if TYPE_CHECKING:
    from tests.conftest import Backend

TTL = 10.0


def _commit(key: str, expected_rev: int, epoch: int | None, value: int) -> Commit:
    return Commit(
        type="counter", key=key, expected_rev=expected_rev, new_rev=expected_rev + 1,
        state=to_json({"value": value}), state_version=1, snapshot_rev=0, journal_rev=0,
        epoch=epoch,
    )


async def test_a_live_owner_keeps_its_objects(storage: Storage) -> None:
    await storage.register_node("a", "http://127.0.0.1:1", "ams", "m-a")
    await storage.register_node("b", "http://127.0.0.1:2", None, None)
    first = await storage.claim("counter", "k", "a", TTL)
    assert (first.granted, first.epoch, first.owner) == (True, 1, "a")
    other = await storage.claim("counter", "k", "b", TTL)
    assert not other.granted
    assert (other.owner, other.address, other.epoch) == ("a", "http://127.0.0.1:1", 1)
    again = await storage.claim("counter", "k", "a", TTL)  # its instance was dropped: re-claim
    assert (again.granted, again.epoch) == (True, 2)
    assert await storage.owners([("counter", "k"), ("counter", "nobody")]) == {
        ("counter", "k"): "a"
    }
    nodes = {n.node_id: n for n in await storage.nodes(TTL)}
    assert nodes["a"].alive and nodes["a"].owned == 1 and nodes["a"].region == "ams"
    assert nodes["b"].alive and nodes["b"].owned == 0 and nodes["b"].address.endswith(":2")


async def test_commits_are_fenced_by_epoch_and_node(storage: Storage) -> None:
    await storage.register_node("a", None, None, None)
    await storage.register_node("b", None, None, None)
    a = await storage.claim("counter", "k", "a", TTL)
    assert await storage.commit([_commit("k", 0, a.epoch, 1)], node_id="a") == [True]
    # b does not own it: its commit writes nothing, even with the right revision
    assert await storage.commit([_commit("k", 1, a.epoch, 99)], node_id="b") == [False]
    await storage.deregister_node("a")  # a graceful stop releases everything it owned
    assert not await storage.heartbeat("a")
    b = await storage.claim("counter", "k", "b", TTL)
    assert (b.granted, b.epoch) == (True, a.epoch + 1)
    # a's instance is stale: same revision, old epoch -> fenced out
    assert await storage.commit([_commit("k", 1, a.epoch, 2)], node_id="a") == [False]
    assert await storage.commit([_commit("k", 1, b.epoch, 3)], node_id="b") == [True]
    cp = await storage.load("counter", "k")
    assert cp is not None and cp.state == {"value": 3} and cp.rev == 2
    # creating an object is fenced too
    assert await storage.commit([_commit("new", 0, 7, 1)], node_id="b") == [False]
    assert await storage.load("counter", "new") is None


async def test_a_dead_owners_objects_can_be_taken(storage: Storage) -> None:
    await storage.register_node("a", None, None, None)
    await storage.register_node("b", None, None, None)
    a = await storage.claim("counter", "k", "a", TTL)
    await asyncio.sleep(0.3)
    assert await storage.heartbeat("b")
    # With a 0.2 s TTL, a (no heartbeat for 0.3 s or more) is dead. (Whether b, which just
    # heartbeated, is alive is asked with a TTL a loaded machine cannot outrun.)
    assert {n.node_id: n.alive for n in await storage.nodes(0.2)}["a"] is False
    assert {n.node_id: n.alive for n in await storage.nodes(TTL)}["b"] is True
    b = await storage.claim("counter", "k", "b", 0.2)
    assert (b.granted, b.epoch) == (True, a.epoch + 1)
    assert not (await storage.claim("counter", "k", "a", TTL)).granted  # b is alive


async def test_hibernation_releases_at_the_owners_epoch_only(storage: Storage) -> None:
    await storage.register_node("a", None, None, None)
    await storage.register_node("b", None, None, None)
    a = await storage.claim("counter", "k", "a", TTL)
    await storage.commit([_commit("k", 0, a.epoch, 1)], node_id="a")
    # a stale release (old epoch) and another node's release change nothing
    stale = StatusUpdate("counter", "k", "hibernated", release_epoch=a.epoch - 1)
    await storage.commit([], [stale], node_id="a")
    await storage.commit([], [StatusUpdate("counter", "k", "hibernated", a.epoch)], node_id="b")
    assert not (await storage.claim("counter", "k", "b", TTL)).granted
    await storage.commit([], [StatusUpdate("counter", "k", "hibernated", a.epoch)], node_id="a")
    assert await storage.owners([("counter", "k")]) == {}
    cp = await storage.load("counter", "k")
    assert cp is not None and cp.status == "hibernated"
    b = await storage.claim("counter", "k", "b", TTL)
    assert (b.granted, b.epoch) == (True, a.epoch + 1)


async def test_concurrent_claims_grant_one_owner(storage: Storage) -> None:
    names = [f"n{i}" for i in range(6)]
    for name in names:
        await storage.register_node(name, None, None, None)
    claims = await asyncio.gather(*(storage.claim("counter", "hot", n, TTL) for n in names))
    granted = [c for c in claims if c.granted]
    assert len(granted) == 1
    winner = granted[0].owner
    assert all(c.owner == winner for c in claims)


async def test_claim_many_and_load_many(storage: Storage) -> None:
    for name in ("a", "b"):
        await storage.register_node(name, f"http://{name}", None, None)
    await storage.claim("counter", "held", "b", TTL)
    idents = [("counter", f"k{i}") for i in range(30)] + [("counter", "held")]
    claims = await storage.claim_many(idents, "a", TTL)
    assert set(claims) == set(idents)
    assert all(claims[i].granted and claims[i].epoch == 1 for i in idents[:30])
    held = claims[("counter", "held")]
    assert (held.granted, held.owner, held.address) == (False, "b", "http://b")
    again = await storage.claim_many(idents[:3], "a", TTL)  # ours already: new epochs
    assert [c.epoch for c in again.values()] == [2, 2, 2]
    assert all(c.taken_from is None for c in again.values())
    await storage.commit([_commit("k1", 0, 2, 5)], node_id="a")
    loaded = await storage.load_many([("counter", "k1"), ("counter", "k2")])
    assert list(loaded) == [("counter", "k1")] and loaded[("counter", "k1")].state == {"value": 5}


async def test_a_takeover_names_the_node_taken_from(storage: Storage) -> None:
    await storage.register_node("a", None, None, None)
    await storage.register_node("b", None, None, None)
    await storage.claim("counter", "k", "a", TTL)
    await asyncio.sleep(0.3)
    await storage.heartbeat("b")
    taken = (await storage.claim_many([("counter", "k")], "b", 0.2))[("counter", "k")]
    assert (taken.granted, taken.taken_from) == (True, "a")
    await storage.commit([], [StatusUpdate("counter", "k", "hibernated", taken.epoch)], node_id="b")
    back = await storage.claim("counter", "k", "a", TTL)  # released: not a takeover
    assert (back.granted, back.taken_from) == (True, None)


async def test_long_dead_nodes_are_pruned_and_their_objects_taken_over(
    storage: Storage,
) -> None:
    await storage.register_node("gone", None, None, None)
    held = await storage.claim("counter", "k", "gone", TTL)
    # A committed object (one never committed leaves no owner row once pruned: test_capacity)
    assert await storage.commit([_commit("k", 0, held.epoch, 1)], node_id="gone") == [True]
    await asyncio.sleep(0.3)
    await storage.register_node("a", None, None, None)
    assert await storage.prune_nodes(0.2) == 1  # "gone" only: "a" heartbeat is fresh
    assert [n.node_id for n in await storage.nodes(TTL)] == ["a"]
    taken = await storage.claim("counter", "k", "a", TTL)
    assert (taken.granted, taken.taken_from) == (True, "gone")
    (a,) = await storage.nodes(TTL, count_owned=False)
    assert (a.alive, a.owned) == (True, 0)  # not counted
    (a,) = await storage.nodes(TTL)
    assert a.owned == 1


async def test_a_starting_node_prunes_long_dead_nodes(storage: Storage) -> None:
    await storage.register_node("crashed", None, None, None)
    await asyncio.sleep(0.3)
    node = ClusterNode(storage, "fresh", 10.0)
    node.prune_after = 0.2
    await node.start(None)
    try:
        assert [n.node_id for n in await storage.nodes(TTL)] == ["fresh"]
    finally:
        await node.stop()


PROCESS = NodeProcess("c59071ac-d310-4b04-b00d-6827b9b5e065", 4026531836, 4321, 128477)


async def test_a_node_records_its_process(storage: Storage) -> None:
    await storage.register_node("a", None, None, "m-a", PROCESS)
    await storage.register_node("b", None, None, None)
    nodes = {n.node_id: n for n in await storage.nodes(TTL)}
    assert nodes["a"].process == PROCESS and nodes["b"].process is None
    assert not nodes["a"].declared_dead


async def test_a_node_declared_dead_is_taken_over_at_once(storage: Storage) -> None:
    await storage.register_node("crashed", None, None, None, PROCESS)
    await storage.register_node("b", None, None, None)
    held = await storage.claim("counter", "k", "crashed", TTL)
    assert not (await storage.claim("counter", "k", "b", TTL)).granted  # alive by heartbeat
    later = NodeProcess(PROCESS.boot_id, PROCESS.pid_namespace, PROCESS.pid, PROCESS.started + 1)
    assert not await storage.declare_dead("crashed", later)  # not the process it records
    assert not await storage.declare_dead("nobody", PROCESS)
    assert await storage.declare_dead("crashed", PROCESS)
    (crashed,) = [n for n in await storage.nodes(TTL) if n.node_id == "crashed"]
    assert crashed.declared_dead and not crashed.alive
    # Well within its TTL, every claim path takes its objects, naming it.
    taken = await storage.claim("counter", "k", "b", TTL)
    assert (taken.granted, taken.epoch, taken.taken_from) == (True, held.epoch + 1, "crashed")
    await storage.claim("counter", "k2", "b", TTL)
    await storage.commit([], [StatusUpdate("counter", "k2", "hibernated", 1)], node_id="b")
    await storage.claim("counter", "k2", "crashed", TTL)  # (as if before it died)
    await storage.declare_dead("crashed", PROCESS)
    many = await storage.claim_many([("counter", "k2")], "b", TTL)
    assert many[("counter", "k2")].taken_from == "crashed"
    # Should it be alive after all, its heartbeat says so: it stops serving, then registers.
    assert not await storage.heartbeat("crashed")
    await storage.register_node("crashed", None, None, None, PROCESS)
    assert await storage.heartbeat("crashed")
    assert {n.node_id: n.alive for n in await storage.nodes(TTL)} == {"b": True, "crashed": True}


async def test_a_database_of_version_3_gets_the_process_columns(sql_backend: Backend) -> None:
    # What an older release created at start (SQLite) or migrated: no process columns.
    from fastapi_objects.storage.tables import storage_metadata

    old = open_storage(sql_backend.url, schema=sql_backend.schema)
    assert isinstance(old, SQLStorage)
    async with old.engine.begin() as conn:
        await conn.run_sync(storage_metadata(sql_backend.schema, version=3).create_all)
    await old.close()
    storage = open_storage(sql_backend.url, schema=sql_backend.schema)
    try:
        await storage.create_tables()
        await storage.register_node("a", None, None, None, PROCESS)
        assert [n.process for n in await storage.nodes(TTL)] == [PROCESS]
        await storage.create_tables()  # idempotent
    finally:
        await storage.close()
