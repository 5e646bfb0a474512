"""Several nodes on one database: one owner per object, calls forwarded to it, signed.

Each node is a real ``Runtime`` with its own internal listener (uvicorn on a loopback port),
sharing a SQLite file or a PostgreSQL schema. The process-level tests (``uvicorn --workers``,
kill -9, SIGSTOP) are in ``test_cluster_processes.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

import httpx2
import pytest
import websockets
from pydantic import BaseModel
from websockets.asyncio.client import connect

from fastapi_objects import DurableObject, Runtime, readonly
from fastapi_objects._exceptions import InvalidArguments, UnknownMethod
from fastapi_objects.cluster import Signer
from fastapi_objects.cluster.channel import CHANNEL_PATH
from fastapi_objects.cluster.listener import WEBSOCKET_PREFIX
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
        assert b._host.routing.forwarder is not None and b._host.routing.forwarder.forwarded >= 30
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


async def test_a_graceful_stop_under_forwarded_load_fails_no_call(durable: Backend) -> None:
    """Calls forwarded to a node while it stops are answered by it or, unanswered, known not
    to have run (its channel closes saying so): each is then sent again to the new owner."""
    keys = [f"k{i}" for i in range(20)]
    answers: dict[str, list[int]] = {k: [] for k in keys}
    async with _node(durable, "b") as b:
        a = _node(durable, "a")
        await a.start()
        for k in keys:
            await a.get(Tally, k).add(0)
        stop = asyncio.Event()

        async def caller(i: int) -> None:
            n = i
            while not stop.is_set():
                key = keys[n % len(keys)]
                answers[key].append(await b.get(Tally, key).add())
                n += 1

        callers = [asyncio.create_task(caller(i)) for i in range(16)]
        await wait_until(lambda: sum(map(len, answers.values())) >= 200, what="forwarded load")
        await a.close()
        before = sum(map(len, answers.values()))
        await wait_until(lambda: sum(map(len, answers.values())) >= before + 200,
                         what="calls served by b after the handover")
        stop.set()
        await asyncio.gather(*callers)  # raises if any call failed
        for k in keys:
            assert sorted(answers[k]) == list(range(1, len(answers[k]) + 1))  # none lost or twice
            assert await b.get(Tally, k).add(0) == len(answers[k])
        assert b._host.routing.forwarder is not None and b._host.routing.forwarder.forwarded >= 200


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


async def _refused(url: str, headers: dict[str, str] | None, status: int = 401) -> str:
    """The body of the refusal an upgrade gets; fails if the upgrade is accepted."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        await connect(url, additional_headers=headers)
    assert refused.value.response.status_code == status
    return refused.value.response.body.decode()


async def test_internal_calls_must_be_signed(durable: Backend) -> None:
    """Only a signed, fresh, well-addressed upgrade opens a call channel; bad frames on an
    open one get an answer or are dropped, and the channel keeps working."""
    async with _node(durable, "a") as a:
        assert await a.get(Tally, "k").add() == 1
        address = a._host.routing.node.address
        assert address is not None
        url = "ws" + address.removeprefix("http") + CHANNEL_PATH
        target = CHANNEL_PATH + "?"
        secret = (await a.storage.cluster_secret()).encode()
        good = Signer(secret, "b").headers("GET", target, b"", "a")
        assert "missing" not in await _refused(url, None)
        assert "bad signature" in await _refused(
            url, Signer(b"not the secret", "b").headers("GET", target, b"", "a"))
        assert "bad signature" in await _refused(  # signed for another path
            url, Signer(secret, "b").headers("GET", WEBSOCKET_PREFIX + "tally/k?", b"", "a"))
        misdirected = await _refused(  # 421: the sender looks the owner up again
            url, Signer(secret, "b").headers("GET", target, b"", "z"), status=421)
        assert "another node" in misdirected
        assert "'z'" not in misdirected and "'a'" not in misdirected  # no node ids
        call = {"type": "tally", "key": "k", "method": "add", "args": {"by": 100}}
        async with connect(url, additional_headers=good) as channel:
            await channel.send(b"not json")
            await channel.send(json.dumps({"no": "id"}))
            await channel.send(json.dumps({"id": 1, "type": "tally", "key": "k"}))
            assert json.loads(await channel.recv())["status"] == 400  # no method, no args
            await channel.send(json.dumps({"id": 2, **call}))
            assert json.loads(await channel.recv()) == {"id": 2, "status": 200, "ok": True,
                                                         "result": 101}
        assert "replayed" in await _refused(url, good)
        async with httpx2.AsyncClient(base_url=address) as http:  # plain HTTP opens nothing
            assert (await http.post(CHANNEL_PATH, json=call)).status_code == 404
        assert await a.get(Tally, "k").add() == 102  # only the one good call ran


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
                       node_id=name, node_ttl=3.0)

    async with node("a") as a, node("b") as b, node("c") as c:
        for rt in (a, b, c):
            await wait_until(lambda rt=rt: len(rt._host.routing.node.live) == 3,
                             what="3 live nodes")
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
                       node_id=name, region=region, node_ttl=3.0)

    async with node("iad1", "iad") as iad, node("ams1", "ams") as ams:
        await wait_until(lambda: len(iad._host.routing.node.live) == 2, what="2 live nodes")
        assert await iad.get(Amsterdam, "x").where() == "ams1"
        assert await ams.get(Amsterdam, "y").where() == "ams1"
    async with node("iad2", "iad") as alone:  # no node in the region: activated here
        assert await alone.get(Amsterdam, "z").where() == "iad2"


def test_the_replay_guard_forgets_expired_nonces() -> None:
    receiver = Signer(b"s", "a", max_age=1.0)  # long enough for 2,000 on a loaded machine
    sender = Signer(b"s", "b")
    for _ in range(2000):
        receiver.verify("POST", "/p", b"x", sender.headers("POST", "/p", b"x", "a"))
    assert len(receiver._seen) == 2000
    time.sleep(1.1)
    receiver.verify("POST", "/p", b"x", sender.headers("POST", "/p", b"x", "a"))
    assert len(receiver._seen) == 1  # the expired ones dropped from the front
