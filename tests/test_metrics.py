"""Prometheus metrics: ``GET /metrics`` read by prometheus-client's own parser, counts exact.

Two real nodes (uvicorn servers, their own listeners) on SQLite and PostgreSQL: local and
forwarded calls, errors of each kind, a takeover, a hibernation, an alarm, a queue and a
relayed websocket client, and then every count each node reports is what was done there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from fastapi_objects import CallTimeout, MissingDependency, Objects, RemoteError
from fastapi_objects.runtime import Runtime
from fastapi_objects.storage import open_storage
from tests._observed import Nap, Stuck, Tally, node_app, two_nodes
from tests._server import LiveServer
from tests._support import uninstall, wait_until
from tests.conftest import Backend

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a text exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(server: LiveServer) -> Samples:
    """Every sample of the node's ``/metrics``."""
    async with httpx2.AsyncClient() as http:
        response = await http.get(server.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (``KeyError`` when the node does not report it)."""
    return samples[(name, frozenset(labels.items()))]


def calls(samples: Samples, type: str, method: str, outcome: str = "ok") -> float:
    return value(samples, "objects_calls_total", type=type, method=method, outcome=outcome)


@pytest.fixture
def durable(sql_backend: Backend) -> Backend:
    return sql_backend


Node = tuple[LiveServer, Objects]


@pytest.fixture
async def nodes(durable: Backend) -> AsyncIterator[tuple[Node, Node]]:
    app_a, objects_a = node_app(durable, "a")
    app_b, objects_b = node_app(durable, "b")
    async with two_nodes(durable, {"a": app_a, "b": app_b}) as servers:
        yield (servers["a"], objects_a), (servers["b"], objects_b)


async def test_every_count_is_what_was_done(
    durable: Backend, nodes: tuple[Node, Node]
) -> None:
    (a, objects_a), (b, objects_b) = nodes
    on_a, on_b = objects_a.get, objects_b.get

    for by in (1, 2, 3):  # a owns tally k
        await a.run(on_a(Tally, "k").add(by))
    assert await a.run(on_a(Tally, "k").where()) == "a"
    assert [await b.run(on_b(Tally, "k").add()) for _ in range(2)] == [7, 8]  # forwarded
    with pytest.raises(RuntimeError, match="secret detail"):
        await a.run(on_a(Tally, "k").boom())
    with pytest.raises(RemoteError):  # forwarded: its owner's error, as internal_error
        await b.run(on_b(Tally, "k").boom())
    with pytest.raises(CallTimeout):
        await a.run(on_a(Stuck, "s").stall())

    # A takeover: tally t's owner is gone (no longer registered) when b calls it.
    storage = open_storage(durable.url, schema=durable.schema)
    try:
        assert (await storage.claim("tally", "t", "gone", 10.0)).granted
    finally:
        await storage.close()
    assert await b.run(on_b(Tally, "t").add()) == 1

    # Hibernations: nap n leaves memory when idle, is thawed by a call and leaves again.
    for hibernations in (1, 2):
        await a.run(on_a(Nap, "n").add())
        await wait_until(lambda n=hibernations: objects_a.stats().hibernations == n,
                         what="nap n to hibernate")

    # An alarm, set by one turn, fired as another.
    await a.run(on_a(Tally, "k").arm())

    async def rung() -> int:
        return int(await on_a(Tally, "k").rung())

    for _ in range(500):
        if await a.run(rung()):
            break
        await asyncio.sleep(0.01)
    assert await a.run(rung()) == 1

    # A queue on a, with two jobs waiting.
    for job in ("x", "y"):
        await a.run(objects_a.queue("emails").enqueue({"to": job}))

    # A client attached through b to tally k on a: a relayed websocket.
    async with connect(b.ws_url("/objects/tally/k/ws")) as ws:
        assert '"objects:attached"' in str(await ws.recv())
        seen_a, seen_b = await scrape(a), await scrape(b)

    # -- a: what ran there, and nothing of what b forwarded counted twice
    assert calls(seen_a, "tally", "add") == 3
    assert calls(seen_a, "tally", "where") == 1
    assert calls(seen_a, "tally", "boom", "internal_error") == 1
    assert ("objects_calls_total", frozenset({("type", "tally"), ("method", "boom"),
                                              ("outcome", "ok")})) in seen_a
    assert calls(seen_a, "tally", "boom") == 0
    assert calls(seen_a, "stuck", "stall", "timeout") == 1
    assert calls(seen_a, "nap", "add") == 2
    assert calls(seen_a, "tally", "arm") == 1
    assert calls(seen_a, "objects_queue", "enqueue") == 2
    assert not any(name == "objects_calls_total" and ("method", "stats") in labels
                   for name, labels in seen_a)  # a scrape reads queues without calls
    duration = "objects_call_duration_seconds_count"
    assert value(seen_a, duration, type="tally", method="add") == 3
    assert value(seen_a, duration, type="tally", method="boom") == 1
    assert value(seen_a, "objects_thaws_total", type="tally") == 1
    assert value(seen_a, "objects_thaws_total", type="nap") == 2
    assert value(seen_a, "objects_hibernations_total", type="nap") == 2
    assert value(seen_a, "objects_hibernations_total", type="tally") == 0
    assert value(seen_a, "objects_active", type="tally") == 1
    assert value(seen_a, "objects_active", type="nap") == 0
    assert value(seen_a, "objects_connections", type="tally") == 1  # the relayed client
    assert value(seen_a, "objects_forwarded_total") == 0
    assert value(seen_a, "objects_takeovers_total") == 0
    assert value(seen_a, "objects_conflicts_total") == 0
    assert value(seen_a, "objects_alarm_lag_seconds_count") == 1
    assert value(seen_a, "objects_queue_jobs", queue="emails", state="ready") == 2
    assert value(seen_a, "objects_queue_jobs", queue="emails", state="dead") == 0
    # Commits: tally k's 5 adds (3 here, 2 forwarded), arm and its alarm's turn; nap's 2
    # adds; the 2 enqueues. The boom, the stall and the reads wrote nothing.
    assert value(seen_a, "objects_commit_batch_size_sum") == 11 == objects_a.stats().commits
    assert value(seen_a, "objects_commit_duration_seconds_count") == value(
        seen_a, "objects_commit_batch_size_count"
    )
    assert value(seen_a, "objects_node_lease_seconds_left") > 0

    # -- b: its callers' calls, forwarded or run after the takeover
    assert calls(seen_b, "tally", "add") == 3
    assert calls(seen_b, "tally", "boom", "internal_error") == 1
    assert value(seen_b, "objects_forwarded_total") == 3
    assert value(seen_b, "objects_takeovers_total") == 1
    assert value(seen_b, "objects_thaws_total", type="tally") == 1
    assert value(seen_b, "objects_active", type="tally") == 1  # t
    assert value(seen_b, "objects_connections", type="tally") == 0  # relayed on to a
    assert value(seen_b, "objects_commit_batch_size_sum") == 1
    assert not any(name == "objects_queue_jobs" for name, _ in seen_b)
    keys = {"k", "t", "n", "s"}
    assert not any(keys & set(dict(labels).values()) for _, labels in seen_a | seen_b)


def _guarded(objects: Objects) -> FastAPI:
    def scraper(authorization: str = Header("")) -> None:
        if authorization != "Bearer scraper":
            raise HTTPException(401)

    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.metrics_router("/internal/metrics",
                                              dependencies=[Depends(scraper)]))
    return app


async def test_the_router_is_guarded_or_public_on_purpose(db_url: str) -> None:
    objects = Objects(objects=[Tally], database_url=db_url)
    with pytest.raises(ValueError, match="public=True"):
        objects.metrics_router()
    async with LiveServer(_guarded(objects)) as server, httpx2.AsyncClient() as http:
        await server.run(objects.get(Tally, "k").add())
        assert (await http.get(server.url + "/internal/metrics")).status_code == 401
        response = await http.get(server.url + "/internal/metrics",
                                  headers={"Authorization": "Bearer scraper"})
        assert calls(parse(response.text), "tally", "add") == 1


async def test_a_collector_for_a_registry_of_your_own(db_url: str) -> None:
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

    before = {m.name for m in REGISTRY.collect()}
    async with Runtime(objects=[Tally], database_url=db_url) as runtime:
        registry = CollectorRegistry()
        registry.register(runtime.metrics())
        assert runtime.metrics() is runtime.metrics()  # one collector, counting once
        await runtime.get(Tally, "k").add()
        text = generate_latest(registry).decode()
    assert calls(parse(text), "tally", "add") == 1
    assert {m.name for m in REGISTRY.collect()} == before  # the global registry is untouched


async def test_without_the_extra_asking_for_metrics_names_the_install(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uninstall(monkeypatch, "prometheus_client", "fastapi_objects.runtime.prometheus")
    runtime = Runtime(objects=[Tally], database_url=db_url)
    with pytest.raises(MissingDependency, match=r"pip install 'fastapi-objects\[prometheus\]'"):
        runtime.metrics()
    assert runtime._host.observer is None  # nothing observes: calls cost what they did
