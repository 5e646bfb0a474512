"""Several nodes on one database: one owner per object, calls forwarded to it, signed.

Each node is a real ``Runtime`` with its own internal listener (uvicorn on a loopback port),
sharing a SQLite file or a PostgreSQL schema. The process-level tests (``uvicorn --workers``,
kill -9, SIGSTOP) are in ``test_cluster_processes.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime

import httpx2
import pytest
from pydantic import BaseModel

from fastapi_objects import DurableObject, Runtime, readonly
from fastapi_objects._exceptions import InvalidArguments, UnknownMethod
from fastapi_objects.cluster import Signer, derived_secret
from fastapi_objects.cluster.forward import CALL_PATH
from fastapi_objects.storage import open_storage
from tests._support import wait_until
from tests.conftest import Backend


class TallyState(BaseModel):
    value: int = 0


class Stamp(BaseModel):
    value: int
    node: str
    at: datetime


class Tally(DurableObject[TallyState]):
    async def add(self, by: int = 1) -> int:
        self.state.value += by
        return self.state.value

    async def stamp(self) -> Stamp:
        self.state.value += 1
        return Stamp(value=self.state.value, node=self.objects.node_id, at=datetime.now())

    @readonly
    async def where(self) -> str:
        return self.objects.node_id

    async def boom(self) -> None:
        raise RuntimeError("secret detail")


@pytest.fixture
async def durable(backend: Backend) -> AsyncIterator[Backend]:
    if backend.name == "memory":
        pytest.skip("nodes share a durable database")
    storage = open_storage(backend.url, schema=backend.schema)
    await storage.create_tables()
    await storage.close()
    yield backend


def _node(backend: Backend, name: str, **options: object) -> Runtime:
    return Runtime(
        objects=[Tally], database_url=backend.url, schema=backend.schema, node_id=name,
        **options,  # type: ignore[arg-type]
    )


async def test_one_owner_and_calls_forwarded_to_it(durable: Backend) -> None:
    async with _node(durable, "a") as a, _node(durable, "b") as b, _node(durable, "c") as c:
        assert await a.get(Tally, "k").add() == 1  # a owns it now
        results = await asyncio.gather(
            *(node.get(Tally, "k").add() for node in (a, b, c) for _ in range(30))
        )
        assert sorted(results) == list(range(2, 92))  # every answer distinct, none lost
        assert {await n.get(Tally, "k").where() for n in (a, b, c)} == {"a"}
        stamp = await b.get(Tally, "k").stamp()  # decoded through the return annotation
        assert isinstance(stamp, Stamp) and stamp.node == "a" and stamp.value == 92
        with pytest.raises(InvalidArguments):  # the owner's errors, as the same classes
            await c.call(Tally, "k", "add", {"by": "many"})
        with pytest.raises(UnknownMethod):
            await c.call(Tally, "k", "nope", {})
        assert b.routing.forwarder is not None and b.routing.forwarder.forwarded >= 30
        assert len(a._host.activations) == 1 and not b._host.activations and not c._host.activations


async def test_a_graceful_stop_hands_objects_over(durable: Backend) -> None:
    async with _node(durable, "b") as b:
        a = _node(durable, "a")
        await a.start()
        assert await a.get(Tally, "k").add(5) == 5
        assert await b.get(Tally, "k").where() == "a"
        await a.close()  # drains, hibernates, releases, deregisters
        assert await b.get(Tally, "k").add() == 6  # b finds it released and takes it
        assert await b.get(Tally, "k").where() == "b"
        nodes = {n.node_id for n in await b.storage.nodes(10)}
        assert nodes == {"b"}


async def test_a_hibernated_object_moves_to_the_next_caller(durable: Backend) -> None:
    class Brief(Tally):
        type_name = "brief"
        idle_timeout = 0.2

    def node(name: str) -> Runtime:
        return Runtime(objects=[Brief], database_url=durable.url, schema=durable.schema,
                       node_id=name)

    async with node("a") as a, node("b") as b:
        assert await a.get(Brief, "k").add() == 1
        await wait_until(lambda: not a._host.activations, what="a to hibernate (and release) it")
        assert await b.get(Brief, "k").add() == 2
        assert await a.get(Brief, "k").where() == "b"


async def test_errors_of_user_code_do_not_leak_across_nodes(durable: Backend) -> None:
    async with _node(durable, "a") as a, _node(durable, "b") as b:
        with pytest.raises(RuntimeError, match="secret detail"):
            await a.get(Tally, "k").boom()  # on the owner: the app's own exception
        with pytest.raises(Exception) as caught:
            await b.get(Tally, "k").boom()
        assert "secret detail" not in str(caught.value)
        assert getattr(caught.value, "type", None) == "internal_error"
        assert "internal error" in str(caught.value)


async def test_internal_calls_must_be_signed(durable: Backend) -> None:
    async with _node(durable, "a") as a:
        assert await a.get(Tally, "k").add() == 1
        address = a.routing.node.address
        assert address is not None
        body = b'{"type": "tally", "key": "k", "method": "add", "args": {"by": 100}}'
        secret = derived_secret(durable.url, durable.schema)
        good = Signer(secret, "b").headers("POST", CALL_PATH, body, "a")
        async with httpx2.AsyncClient(base_url=address) as http:
            unsigned = await http.post(CALL_PATH, content=body)
            wrong_key = Signer(b"not the secret", "b").headers("POST", CALL_PATH, body, "a")
            wrong = await http.post(CALL_PATH, content=body, headers=wrong_key)
            tampered = await http.post(CALL_PATH, content=body.replace(b"100", b"900"),
                                       headers=good)
            other_node = Signer(secret, "b").headers("POST", CALL_PATH, body, "z")
            misdirected = await http.post(CALL_PATH, content=body, headers=other_node)
            ok = await http.post(CALL_PATH, content=body, headers=good)
            replayed = await http.post(CALL_PATH, content=body, headers=good)
            stale = dict(Signer(secret, "b").headers("POST", CALL_PATH, body, "a"))
        for response in (unsigned, wrong, tampered, misdirected, replayed):
            assert response.status_code == 401, response.text
        assert "replayed" in replayed.text and "bad signature" in wrong.text
        assert ok.status_code == 200 and ok.json() == {"ok": True, "result": 101}
        assert stale  # (a request's age is checked too: see test_signing)
        assert await a.get(Tally, "k").add() == 102  # only the one good request ran


def test_signatures_expire() -> None:
    signer = Signer(b"s", "a", max_age=30)
    headers = Signer(b"s", "b").headers("POST", "/p", b"x", "a")
    headers["x-objects-time"] = f"{time.time() - 60:.3f}"
    from fastapi_objects.cluster import Unauthorized

    with pytest.raises(Unauthorized):  # the signature no longer matches the changed time
        signer.verify("POST", "/p", b"x", headers)
    old = Signer(b"s", "b")
    real_time = time.time
    try:
        time.time = lambda: real_time() - 60  # type: ignore[assignment]
        headers = old.headers("POST", "/p", b"x", "a")
    finally:
        time.time = real_time  # type: ignore[assignment]
    with pytest.raises(Unauthorized, match="old"):
        signer.verify("POST", "/p", b"x", headers)


async def test_a_non_loopback_listener_needs_a_secret(durable: Backend) -> None:
    node = _node(durable, "a", internal_host="0.0.0.0")
    with pytest.raises(ValueError, match="OBJECTS_CLUSTER_SECRET"):
        await node.start()
    await node.close()


class Spread(Tally):
    type_name = "spread"
    placement = "hash"


class Amsterdam(Tally):
    type_name = "amsterdam"
    placement = "region"
    region = "ams"


async def test_hash_placement_activates_each_key_on_its_rendezvous_node(
    durable: Backend,
) -> None:
    from fastapi_objects.runtime.placement import rendezvous

    def node(name: str) -> Runtime:
        return Runtime(objects=[Spread], database_url=durable.url, schema=durable.schema,
                       node_id=name, node_ttl=0.6)

    async with node("a") as a, node("b") as b, node("c") as c:
        for rt in (a, b, c):
            await wait_until(lambda rt=rt: len(rt.routing.node.live) == 3, what="3 live nodes")
        keys = [f"k{i}" for i in range(24)]
        for i, key in enumerate(keys):  # calls land on every node
            await (a, b, c)[i % 3].get(Spread, key).add()
        owners = await a.storage.owners([("spread", k) for k in keys])
        expected = {("spread", k): rendezvous(f"spread:{k}", ["a", "b", "c"]) for k in keys}
        assert owners == expected
        assert len(set(owners.values())) == 3  # 24 keys do spread over 3 nodes


async def test_region_placement_activates_in_the_region(durable: Backend) -> None:
    def node(name: str, region: str) -> Runtime:
        return Runtime(objects=[Amsterdam], database_url=durable.url, schema=durable.schema,
                       node_id=name, region=region, node_ttl=0.6)

    async with node("iad1", "iad") as iad, node("ams1", "ams") as ams:
        await wait_until(lambda: len(iad.routing.node.live) == 2, what="2 live nodes")
        assert await iad.get(Amsterdam, "x").where() == "ams1"
        assert await ams.get(Amsterdam, "y").where() == "ams1"
    async with node("iad2", "iad") as alone:  # no node in the region: activated here
        assert await alone.get(Amsterdam, "z").where() == "iad2"


def test_the_replay_guard_forgets_expired_nonces() -> None:
    receiver = Signer(b"s", "a", max_age=0.05)
    sender = Signer(b"s", "b")
    for _ in range(2000):
        receiver.verify("POST", "/p", b"x", sender.headers("POST", "/p", b"x", "a"))
    assert len(receiver._seen) == 2000
    time.sleep(0.1)
    receiver.verify("POST", "/p", b"x", sender.headers("POST", "/p", b"x", "a"))
    assert len(receiver._seen) == 1  # the expired ones dropped from the front
