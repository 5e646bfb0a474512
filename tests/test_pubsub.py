"""One pub/sub contract, run against every backend: memory, PostgreSQL and Redis.

Two ``PubSub`` instances on the same URL are two nodes. Every test runs in its own
namespace (a memory hub name, a PostgreSQL schema, a Redis channel) so tests never cross-talk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from fastapi_objects._exceptions import MissingDependency, ObjectsError, StorageUnavailable
from fastapi_objects.pubsub import (
    Message,
    PubSub,
    PubSubClosed,
    Subscription,
    SubscriptionOverflow,
    encode_message,
    open_pubsub,
)
from fastapi_objects.pubsub.postgres import NOTIFY_LIMIT, PostgresBackend
from fastapi_objects.pubsub.redis import RedisBackend
from fastapi_objects.storage.sql import SQLStorage

REDIS_URL = os.environ.get("OBJECTS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_REDIS = os.environ.get("OBJECTS_REQUIRE_REDIS") == "1"
WAIT = 10.0  # generous: only reached when a message is really missing


async def _redis_probe() -> str | None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        await client.ping()
    except Exception as exc:
        return f"Redis at {REDIS_URL} is not reachable ({exc!r}); set OBJECTS_TEST_REDIS_URL"
    finally:
        await client.aclose()
    return None


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis URL; skips (or fails under OBJECTS_REQUIRE_REDIS=1) when unreachable."""
    reason = asyncio.run(_redis_probe())
    if reason is not None:
        if REQUIRE_REDIS:
            pytest.fail(reason + " and OBJECTS_REQUIRE_REDIS=1")
        pytest.skip(reason)
    return REDIS_URL


class Cluster:
    """Nodes of one pub/sub namespace; all closed at the end of the test."""

    def __init__(self, name: str, url: str, schema: str) -> None:
        self.name = name
        self.url = url
        self.schema = schema
        self.nodes: list[PubSub] = []

    async def node(self, node_id: str | None = None) -> PubSub:
        pubsub = open_pubsub(self.url, node_id=node_id, schema=self.schema)
        self.nodes.append(pubsub)
        await pubsub.start()
        return pubsub

    def __repr__(self) -> str:
        return f"Cluster({self.name})"


@pytest.fixture(params=["memory", "postgres", "redis"])
def backend_spec(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    """(name, url, namespace). Sync: the session fixtures it may pull in call asyncio.run()."""
    if request.param == "postgres":
        return "postgres", request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema")
    namespace = f"t_{uuid.uuid4().hex[:12]}"
    if request.param == "redis":
        return "redis", request.getfixturevalue("redis_url"), namespace
    return "memory", "memory://", namespace


@pytest.fixture
async def cluster(backend_spec: tuple[str, str, str]) -> AsyncIterator[Cluster]:
    c = Cluster(*backend_spec)
    if c.name == "postgres":
        storage = SQLStorage(c.url, schema=c.schema)
        await storage.create_tables()
        await storage.close()
    try:
        yield c
    finally:
        for node in c.nodes:
            await node.close()


async def recv(sub: Subscription) -> Message:
    return await asyncio.wait_for(sub.get(), WAIT)


async def recv_n(sub: Subscription, n: int) -> list[Message]:
    return [await recv(sub) for _ in range(n)]


def _pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


# --- the contract -------------------------------------------------------------------------


async def test_local_delivery_in_call_order(cluster: Cluster) -> None:
    a = await cluster.node()
    async with a.subscribe("counter:x") as sub:
        for i in range(100):
            a.publish_nowait("counter:x", "changed", {"value": i, "text": "é✓"})
        got = await recv_n(sub, 100)
    assert [m.payload["value"] for m in got] == list(range(100))
    assert got[0] == Message("counter:x", "changed", {"value": 0, "text": "é✓"}, None, a.node_id)


async def test_cross_node_in_order_and_no_echo_to_origin(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    sub_a, sub_b = a.subscribe("counter:x"), b.subscribe("counter:x")
    for i in range(50):
        a.publish_nowait("counter:x", "changed", i)
    remote = await recv_n(sub_b, 50)
    assert [m.payload for m in remote] == list(range(50))
    assert {m.origin for m in remote} == {a.node_id}
    # b answers only after seeing all of a's messages: on one ordered channel an echo of a's
    # own messages would reach a before b's marker.
    await b.publish("counter:x", "marker", None)
    local = await recv_n(sub_a, 51)
    assert [m.payload for m in local[:50]] == list(range(50))
    assert (local[50].event, local[50].origin) == ("marker", b.node_id)
    assert (await recv(sub_b)).event == "marker"  # b's own publish, delivered once, locally


async def test_many_subscribers_per_topic_on_every_node(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    subs = [a.subscribe("room:1") for _ in range(5)] + [b.subscribe("room:1") for _ in range(5)]
    assert a.subscriber_count("room:1") == b.subscriber_count("room:1") == 5
    await a.publish("room:1", "hello", {"n": 1})
    await b.publish("room:1", "hello", {"n": 2})
    for sub in subs:
        got = await recv_n(sub, 2)
        assert sorted(m.payload["n"] for m in got) == [1, 2]


async def test_topics_are_isolated(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    topics = ["counter:a", "counter:b", "counter:a:sub"]
    subs = {topic: b.subscribe(topic) for topic in topics}
    local = {topic: a.subscribe(topic) for topic in topics}
    for round_ in range(2):
        for topic in reversed(topics):
            a.publish_nowait(topic, "e", f"{topic}#{round_}")
    for topic in topics:
        for sub in (subs[topic], local[topic]):
            got = await recv_n(sub, 2)
            assert [m.payload for m in got] == [f"{topic}#0", f"{topic}#1"]
            assert {m.topic for m in got} == {topic}


async def test_exclude_is_carried_to_every_node(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    sub_a, sub_b = a.subscribe("chat:r"), b.subscribe("chat:r")
    a.publish_nowait("chat:r", "typing", {"who": "ann"}, exclude="conn-1")
    await a.publish("chat:r", "said", "hi")
    for sub in (sub_a, sub_b):
        first, second = await recv_n(sub, 2)
        assert (first.exclude, second.exclude) == ("conn-1", None)


async def test_large_payload_crosses_nodes(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    sub_b = b.subscribe("doc:1")
    big = {"blob": "x" * 50_000, "list": list(range(500)), "text": "ünïcode " * 100}
    a.publish_nowait("doc:1", "big", big)
    a.publish_nowait("doc:1", "small", 1)  # must not overtake the large one being fetched
    first, second = await recv_n(sub_b, 2)
    assert (first.event, first.payload, second.event) == ("big", big, "small")
    if cluster.name == "postgres":  # the NOTIFY carried a reference to a row
        conn = await asyncpg.connect(_pg_dsn(cluster.url))
        try:
            rows = await conn.fetchval(f'SELECT count(*) FROM "{cluster.schema}".objects_pubsub')
        finally:
            await conn.close()
        assert rows == 1


async def test_overflow_closes_slow_subscriber_without_blocking_publisher(
    cluster: Cluster,
) -> None:
    a, b = await cluster.node(), await cluster.node()
    slow_local, slow_remote = a.subscribe("t", max_queue=5), b.subscribe("t", max_queue=5)
    fast = b.subscribe("t")
    for i in range(50):  # synchronous: returns without waiting for any subscriber
        a.publish_nowait("t", "e", i)
    assert slow_local.closed  # local delivery happened inside publish_nowait, before any await
    assert [m.payload for m in await recv_n(fast, 50)] == list(range(50))
    for slow in (slow_local, slow_remote):
        assert slow.closed
        with pytest.raises(SubscriptionOverflow, match="fell more than 5 messages behind") as err:
            await slow.get()
        assert isinstance(err.value, ObjectsError) and err.value.type == "overflow"
    assert a.subscriber_count("t") == 0 and b.subscriber_count("t") == 1
    resub = b.subscribe("t")  # a fresh subscription resumes from now on
    await a.publish("t", "e", "again")
    assert (await recv(resub)).payload == "again"


async def test_unsubscribe_on_exit_and_iteration_ends_on_close(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    async with b.subscribe("t") as sub:
        assert b.subscriber_count("t") == 1
    assert b.subscriber_count("t") == 0 and sub.closed
    with pytest.raises(PubSubClosed):
        await sub.get()

    listening = b.subscribe("t")
    collected: list[Any] = []

    async def consume() -> None:
        async for message in listening:
            collected.append(message.payload)
            if len(collected) == 3:
                listening.close()

    task = asyncio.create_task(consume())
    for i in range(3):
        await a.publish("t", "e", i)
    await asyncio.wait_for(task, WAIT)
    assert collected == [0, 1, 2] and b.subscriber_count("t") == 0


async def test_publish_after_close_is_a_clear_error(cluster: Cluster) -> None:
    a = await cluster.node()
    sub = a.subscribe("t")
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    await a.close()
    with pytest.raises(PubSubClosed, match="the pub/sub is closed"):
        a.publish_nowait("t", "e", 1)
    with pytest.raises(PubSubClosed, match="the pub/sub is closed"):
        await a.publish("t", "e", 1)
    with pytest.raises(PubSubClosed, match="closed"):
        a.subscribe("t")
    with pytest.raises(PubSubClosed):  # a reader waiting at close time is woken, not left hanging
        await asyncio.wait_for(waiting, WAIT)
    assert [m async for m in sub] == []


async def test_publish_before_start_and_non_json_payload(cluster: Cluster) -> None:
    idle = open_pubsub(cluster.url, schema=cluster.schema)
    with pytest.raises(PubSubClosed, match="not started"):
        idle.publish_nowait("t", "e", 1)
    a = await cluster.node()
    sub = a.subscribe("t")
    with pytest.raises(ValueError, match="not JSON-compatible"):
        a.publish_nowait("t", "e", {"bad": object()})
    a.publish_nowait("t", "e", "ok")
    assert (await recv(sub)).payload == "ok"  # nothing of the rejected message was delivered


async def test_namespaces_do_not_cross_talk(cluster: Cluster) -> None:
    a = await cluster.node()
    other = Cluster(cluster.name, cluster.url, cluster.schema + "_other")
    try:
        stranger = await other.node()
        sub = stranger.subscribe("t")
        await a.publish("t", "e", "not for you")
        await stranger.publish("t", "e", "mine")
        assert (await recv(sub)).payload == "mine"
    finally:
        for node in other.nodes:
            await node.close()


# --- what only the network backends do ------------------------------------------------------


network = pytest.mark.parametrize("backend_spec", ["postgres", "redis"], indirect=True)


async def _inject(cluster: Cluster, node: PubSub, raw: list[str]) -> None:
    """Send raw payloads on a node's channel from outside, as a stray client would."""
    backend = node.backend
    if isinstance(backend, PostgresBackend):
        conn = await asyncpg.connect(_pg_dsn(cluster.url))
        try:
            for payload in raw:
                await conn.execute("SELECT pg_notify($1, $2)", backend.channel, payload)
        finally:
            await conn.close()
    else:
        import redis.asyncio as aioredis

        assert isinstance(backend, RedisBackend)
        client = aioredis.Redis.from_url(cluster.url)
        try:
            for payload in raw:
                await client.publish(backend.channel, payload)
        finally:
            await client.aclose()


@network
async def test_malformed_messages_are_logged_and_skipped(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    b = await cluster.node()
    sub = b.subscribe("t")
    garbage = ["not json", "[1, 2]", '{"topic": 1}', '{"ref":999999}', '{"ref":x}']
    valid = encode_message(Message("t", "e", "still alive", None, "another-node")).decode()
    with caplog.at_level(logging.ERROR, logger="fastapi_objects.pubsub"):
        await _inject(cluster, b, [*garbage, valid])
        assert (await recv(sub)).payload == "still alive"
    skipped = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(skipped) == len(garbage)


@pytest.mark.parametrize("backend_spec", ["postgres"], indirect=True)
async def test_postgres_reconnects_after_terminate(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    listener, sender = b.backend, a.backend
    assert isinstance(listener, PostgresBackend) and isinstance(sender, PostgresBackend)
    sub = b.subscribe("t")
    admin = await asyncpg.connect(_pg_dsn(cluster.url))
    find = "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
    try:
        old_pid = await admin.fetchval(find, listener.listen_name)
        assert old_pid is not None
        # Kill b's LISTEN connection and every connection a publishes through.
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name IN ($1, $2)", listener.listen_name, sender.pool_name,
        )
        assert killed >= 2
        async with asyncio.timeout(WAIT):
            while listener.reconnects < 1:  # noqa: ASYNC110 - polls state the backend owns
                await asyncio.sleep(0.02)
        new_pid = await admin.fetchval(find, listener.listen_name)
    finally:
        await admin.close()
    assert new_pid not in (None, old_pid)
    await a.publish("t", "e", "after reconnect")
    assert (await recv(sub)).payload == "after reconnect"


@pytest.mark.parametrize("backend_spec", ["postgres"], indirect=True)
async def test_postgres_notify_limit_boundary(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    sub = b.subscribe("t")
    overhead = len(encode_message(Message("t", "e", "", None, a.node_id)))
    sizes = [NOTIFY_LIMIT - overhead, NOTIFY_LIMIT - overhead + 1]  # fits; one byte too many
    for size in sizes:
        await a.publish("t", "e", "b" * size)
    assert [len(m.payload) for m in await recv_n(sub, 2)] == sizes
    conn = await asyncpg.connect(_pg_dsn(cluster.url))
    try:
        rows = await conn.fetchval(f'SELECT count(*) FROM "{cluster.schema}".objects_pubsub')
    finally:
        await conn.close()
    assert rows == 1  # only the message past the limit went through the table


@pytest.mark.parametrize("backend_spec", ["redis"], indirect=True)
async def test_redis_listener_resubscribes_after_client_kill(cluster: Cluster) -> None:
    import redis.asyncio as aioredis

    a, b = await cluster.node(), await cluster.node()
    backend = b.backend
    assert isinstance(backend, RedisBackend)
    sub = b.subscribe("t")
    admin = aioredis.Redis.from_url(cluster.url)

    async def listener_ids() -> set[int]:
        clients = await admin.client_list()
        return {
            int(c["id"]) for c in clients
            if c["name"] == backend.client_name and int(c.get("sub", 0)) > 0
        }

    try:
        (old_id,) = await listener_ids()
        assert await admin.client_kill_filter(_id=str(old_id))
        async with asyncio.timeout(WAIT):
            while not (await listener_ids()) - {old_id}:  # noqa: ASYNC110 - server-side state
                await asyncio.sleep(0.02)
    finally:
        await admin.aclose()
    await a.publish("t", "e", "after reconnect")
    assert (await recv(sub)).payload == "after reconnect"


@pytest.mark.parametrize("backend_spec", ["postgres"], indirect=True)
async def test_postgres_deletes_old_payload_rows(cluster: Cluster) -> None:
    a = await cluster.node()
    conn = await asyncpg.connect(_pg_dsn(cluster.url))
    table = f'"{cluster.schema}".objects_pubsub'
    try:
        await conn.execute(
            f"INSERT INTO {table} (topic, data, created_at) "
            "VALUES ('t', '{}', now() - interval '10 minutes'), ('t', '{}', now())"
        )
        await a.publish("t", "big", "y" * 20_000)
        ages = await conn.fetch(f"SELECT now() - created_at AS age FROM {table}")
    finally:
        await conn.close()
    assert len(ages) == 2  # the recent row and the new one; the 10-minute-old row is gone
    assert all(r["age"].total_seconds() < 60 for r in ages)


async def test_large_payload_without_the_table_is_a_clear_error(
    pg_url: str, pg_schema: str
) -> None:
    async with open_pubsub(pg_url, schema=pg_schema) as a:
        with pytest.raises(StorageUnavailable, match="objects_pubsub"):
            await a.publish("t", "big", "z" * 10_000)
        await a.publish("t", "small", "fits in a NOTIFY")


@pytest.mark.parametrize("url", ["postgresql+asyncpg://root@127.0.0.1:1/test", "redis://127.0.0.1:1/0"])
async def test_unreachable_server_fails_start_clearly(url: str) -> None:
    pubsub = open_pubsub(url)
    with pytest.raises(StorageUnavailable, match="cannot reach"):
        await pubsub.start()
    with pytest.raises(PubSubClosed, match="not started"):
        pubsub.publish_nowait("t", "e", 1)


def test_unknown_scheme_names_the_supported_ones() -> None:
    with pytest.raises(ValueError, match=r"memory://.*postgresql\+asyncpg://.*redis://"):
        open_pubsub("kafka://localhost:9092")


def test_redis_without_the_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import fail exactly as if redis were not installed.
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(MissingDependency, match=r"pip install 'fastapi-objects\[redis\]'"):
        open_pubsub("redis://127.0.0.1:6379/0")


async def test_memory_urls_are_separate_hubs() -> None:
    hub_one, hub_two = (f"memory://{name}-{uuid.uuid4().hex[:8]}" for name in ("one", "two"))
    async with (
        open_pubsub(hub_one) as one,
        open_pubsub(hub_two) as two,
        open_pubsub(hub_one) as one_again,
    ):
        sub_two, sub_one = two.subscribe("t"), one_again.subscribe("t")
        await one.publish("t", "e", "for hub one")
        await two.publish("t", "e", "for hub two")
        assert (await recv(sub_one)).payload == "for hub one"
        assert (await recv(sub_two)).payload == "for hub two"


def test_memory_hub_reaches_a_node_in_another_thread() -> None:
    url = f"memory://threads-{uuid.uuid4().hex[:8]}"
    ready, received = threading.Event(), []

    async def other_thread() -> None:
        async with open_pubsub(url) as node, node.subscribe("t") as sub:
            ready.set()
            received.append((await recv(sub)).payload)

    thread = threading.Thread(target=asyncio.run, args=(other_thread(),))
    thread.start()
    try:
        assert ready.wait(WAIT)

        async def main_thread() -> None:
            async with open_pubsub(url) as node:
                await node.publish("t", "e", "across threads")

        asyncio.run(main_thread())
    finally:
        thread.join(WAIT)
    assert received == ["across threads"]
