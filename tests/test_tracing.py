"""OpenTelemetry traces: one trace across two real nodes, recorded by the SDK's exporter.

Each node has a tracer provider of its own (as two processes would) and a middleware that
does what OpenTelemetry's ASGI instrumentation does: a server span per request or websocket,
continuing the trace its ``traceparent`` header names. So a span found on the owner in the
trace the client started got there over the call channel or the websocket relay, nowhere else.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence

import httpx2
import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.asyncio.client import connect

from fastapi_objects import MissingDependency, Objects
from fastapi_objects.runtime import Runtime
from tests._observed import Tally, node_app, two_nodes
from tests._server import LiveServer
from tests._support import uninstall, wait_until
from tests.conftest import Backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RequestSpans:
    """A server span per request or websocket, in the trace its headers name."""

    def __init__(self, app: ASGIApp, provider: TracerProvider) -> None:
        self.app = app
        self.tracer = provider.get_tracer("test")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        name = f"{scope.get('method', 'WEBSOCKET')} {scope['path']}"
        with self.tracer.start_as_current_span(
            name, context=propagate.extract(headers), kind=SpanKind.SERVER
        ):
            await self.app(scope, receive, send)


class Node:
    """A node's server, its ``Objects`` and the spans it recorded."""

    def __init__(self, server: LiveServer, objects: Objects, spans: InMemorySpanExporter):
        self.server = server
        self.objects = objects
        self.exporter = spans

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = self.exporter.get_finished_spans()
        return [s for s in found if name is None or s.name == name]

    def span(self, name: str) -> ReadableSpan:
        (found,) = self.spans(name)
        return found


@pytest.fixture
async def nodes(sql_backend: Backend) -> AsyncIterator[tuple[Node, Node]]:
    apps, parts = {}, {}
    for name in ("a", "b"):
        exporter = InMemorySpanExporter()
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        app, objects = node_app(sql_backend, name, tracer_provider=provider)
        app.add_middleware(RequestSpans, provider=provider)
        apps[name], parts[name] = app, (objects, exporter)
    async with two_nodes(sql_backend, apps) as servers:
        yield tuple(Node(servers[n], *parts[n]) for n in ("a", "b"))  # type: ignore[misc]


def _traceparent() -> tuple[int, int, dict[str, str]]:
    trace_id, span_id = secrets.randbits(128) | 1, secrets.randbits(64) | 1
    return trace_id, span_id, {"traceparent": f"00-{trace_id:032x}-{span_id:016x}-01"}


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _in(trace_id: int, spans: Sequence[ReadableSpan]) -> None:
    assert spans and all(s.context.trace_id == trace_id for s in spans), spans


async def test_a_forwarded_call_is_one_trace_across_two_nodes(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    async with httpx2.AsyncClient() as http:
        assert (await http.post(a.server.url + "/call/tally/k/add", json={})).status_code == 200
        a.exporter.clear()
        b.exporter.clear()
        trace_id, client_span, headers = _traceparent()
        reply = await http.post(b.server.url + "/call/tally/k/add", json={"by": 2},
                                headers=headers)
    assert reply.json() == {"result": 3}
    await wait_until(lambda: bool(b.spans("POST /call/tally/k/add")), what="b's request span")

    request = b.span("POST /call/tally/k/add")
    called = b.span("tally.add")  # on b, the node the request came to: its span's child
    served = a.span("tally.add")  # on a, the owner: the call continues there
    turn = a.span("turn tally.add")
    _in(trace_id, [request, called, served, turn])
    assert _parent(request) == client_span
    assert _parent(called) == request.context.span_id
    assert called.kind == SpanKind.INTERNAL and served.kind == SpanKind.SERVER
    assert dict(called.attributes or {}) == {
        "objects.type": "tally", "objects.key": "k", "objects.method": "add",
        "objects.node": "b",
    }
    assert (served.attributes or {})["objects.node"] == "a"
    assert _parent(served) == called.context.span_id
    assert _parent(turn) == served.context.span_id
    assert not b.spans("turn tally.add") and not b.spans("commit batch")  # nothing ran on b

    # The batch that committed the turn: a trace of its own, linked to the call it carried.
    (batch,) = [s for s in a.spans("commit batch")
                if any(link.context.span_id == served.context.span_id for link in s.links)]
    assert batch.parent is None and batch.context.trace_id != trace_id
    assert (batch.attributes or {})["objects.batch_size"] >= 1


async def test_a_thaw_is_a_span_of_the_call_that_woke_the_object(
    nodes: tuple[Node, Node],
) -> None:
    a, _ = nodes
    trace_id, _, headers = _traceparent()
    async with httpx2.AsyncClient() as http:
        await http.post(a.server.url + "/call/tally/fresh/add", json={}, headers=headers)
    await wait_until(lambda: bool(a.spans("POST /call/tally/fresh/add")), what="the request")
    called, thaw = a.span("tally.add"), a.span("thaw tally")
    _in(trace_id, [called, thaw])
    assert _parent(thaw) == called.context.span_id
    assert (thaw.attributes or {})["objects.key"] == "fresh"


async def test_a_relayed_websocket_continues_its_trace_on_the_owner(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    assert await a.server.run(a.objects.get(Tally, "k").add()) == 1  # a owns k
    a.exporter.clear()
    trace_id, _, headers = _traceparent()
    async with connect(b.server.ws_url("/objects/tally/k/ws"), additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["event"] == "objects:attached"
        await ws.send(json.dumps({"ref": 1, "call": "add", "args": {"by": 4}}))
        assert json.loads(await ws.recv()) == {"ref": 1, "ok": True, "result": 5}
    await wait_until(lambda: bool(b.spans("WEBSOCKET /objects/tally/k/ws")), what="b's span")
    client = b.span("WEBSOCKET /objects/tally/k/ws")  # where the browser connected
    attach, called = a.span("turn tally.on_connect"), a.span("tally.add")
    _in(trace_id, [client, attach, called])
    assert _parent(attach) == client.context.span_id == _parent(called)
    assert a.span("turn tally.add").parent == called.context


async def test_log_records_about_an_object_name_it_and_the_node(
    nodes: tuple[Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = nodes
    caplog.set_level(logging.ERROR, logger="fastapi_objects")
    assert await a.server.run(a.objects.get(Tally, "k").add()) == 1
    async with httpx2.AsyncClient() as http:  # forwarded to a, whose code raises
        reply = await http.post(b.server.url + "/call/tally/k/boom", json={})
    assert reply.json()["error"]["type"] == "internal_error"
    (record,) = [r for r in caplog.records if "in forwarded tally:k.boom()" in r.getMessage()]
    assert (record.objects_type, record.objects_key, record.objects_node) == ("tally", "k", "a")
    (failed,) = a.spans("tally.boom")  # its span says so too, with the exception's event
    assert (failed.attributes or {})["objects.outcome"] == "internal_error"
    assert [e.name for e in failed.events] == ["exception"]


_GLOBAL_PROVIDER = """
import asyncio, json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from fastapi_objects.runtime import Runtime
from tests._observed import Tally

async def main(configure):
    exporter = InMemorySpanExporter()
    if configure:  # what an app (or opentelemetry-instrument) does at start
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    async with Runtime(objects=[Tally], database_url="memory://") as runtime:
        await runtime.get(Tally, "k").add()
        observed = runtime._host.observer is not None
    return observed, sorted({s.name for s in exporter.get_finished_spans()})

print(json.dumps([asyncio.run(main(False)), asyncio.run(main(True))]))
"""


def test_traces_follow_the_apps_global_tracer_provider() -> None:
    done = subprocess.run([sys.executable, "-c", _GLOBAL_PROVIDER], cwd=ROOT, env=os.environ,
                          capture_output=True, text=True, timeout=60, check=True)
    unconfigured, configured = json.loads(done.stdout)
    assert unconfigured == [False, []]  # no provider: nothing observes, nothing is made
    assert configured == [True, ["commit batch", "tally.add", "thaw tally", "turn tally.add"]]


def test_asking_for_traces_without_the_extra_names_the_install(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uninstall(monkeypatch, "opentelemetry", "fastapi_objects.runtime.tracing")
    with pytest.raises(MissingDependency, match=r"pip install 'fastapi-objects\[otel\]'"):
        Runtime(objects=[Tally], database_url=db_url, tracing=True)
    runtime = Runtime(objects=[Tally], database_url=db_url)  # not asked: no traces, no error
    runtime._trace()
    assert runtime._host.observer is None
