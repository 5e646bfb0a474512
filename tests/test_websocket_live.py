"""Websockets for real: uvicorn on a loopback port, `websockets` clients, httpx over TCP.

The server runs in its own thread and event loop (tests/_server.py), so clients and server
share nothing but sockets. On PostgreSQL, broadcasts between nodes go over LISTEN/NOTIFY.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from fastapi_objects import Objects
from tests._apps import Counter, Room, make_app
from tests._server import LiveServer

WAIT = 15.0  # generous: only reached when a frame is really missing
CLIENTS = 120
BROADCASTS = 25
ATTACHING = 500  # clients attaching at once in the attached-frame test


@pytest.fixture
async def live(db_url: str) -> AsyncIterator[tuple[LiveServer, Objects]]:
    app, objects = make_app(db_url)
    async with LiveServer(app) as server:
        yield server, objects


async def _recv(ws: ClientConnection) -> dict[str, Any]:
    frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert isinstance(frame, dict)
    return frame


async def _reply(ws: ClientConnection, ref: Any) -> dict[str, Any]:
    """The reply to ``ref``, skipping broadcasts."""
    while True:
        frame = await _recv(ws)
        if frame.get("ref") == ref and "ok" in frame:
            return frame


async def _events(
    ws: ClientConnection, event: str, count: int, replies: dict[Any, Any] | None = None
) -> list[Any]:
    """The payloads of the next ``count`` broadcasts of ``event``, in arrival order.

    Call replies read on the way are kept in ``replies`` (by ref) when it is given.
    """
    payloads = []
    while len(payloads) < count:
        frame = await _recv(ws)
        if frame.get("event") == event:
            payloads.append(frame["payload"])
        elif replies is not None and "ok" in frame:
            replies[frame["ref"]] = frame
    return payloads


async def _call(ws: ClientConnection, ref: Any, method: str, **args: Any) -> Any:
    await ws.send(json.dumps({"ref": ref, "call": method, "args": args}))
    reply = await _reply(ws, ref)
    assert reply["ok"] is True, reply
    return reply["result"]


async def _wait_attached(ws: ClientConnection) -> str:
    """Read the first frame, which must say the client is attached; its connection id."""
    frame = await _recv(ws)
    assert frame["event"] == "objects:attached", frame
    connection = frame["payload"]["connection"]
    assert isinstance(connection, str)
    return connection


@asynccontextmanager
async def _attached(url: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    """A client connected to ``url`` and attached (its objects:attached frame read)."""
    async with connect(url, open_timeout=WAIT, **kwargs) as ws:
        await _wait_attached(ws)
        yield ws


async def _attach_many(server: LiveServer, path: str, count: int) -> list[ClientConnection]:
    """``count`` clients, each attached (its objects:attached frame read) before this returns."""
    clients = await asyncio.gather(
        *(connect(server.ws_url(path), open_timeout=WAIT) for _ in range(count))
    )
    await asyncio.gather(*(_wait_attached(ws) for ws in clients))
    return clients


async def _close_all(clients: list[ClientConnection]) -> None:
    await asyncio.gather(*(ws.close() for ws in clients))


async def _fan_out(server: LiveServer, key: str) -> None:
    """CLIENTS clients on one object each get all BROADCASTS broadcasts, in commit order."""
    clients = await _attach_many(server, f"/objects/counter/{key}/ws", CLIENTS)
    try:
        driver = clients[0]
        # Pipelined: every call is sent before any reply is read.
        for i in range(BROADCASTS):
            await driver.send(json.dumps({"ref": i, "call": "increment", "args": {}}))
        replies: dict[Any, Any] = {}
        received = await asyncio.gather(
            _events(driver, "changed", BROADCASTS, replies),
            *(_events(ws, "changed", BROADCASTS) for ws in clients[1:]),
        )
        expected = [{"value": v} for v in range(1, BROADCASTS + 1)]
        for payloads in received:
            assert payloads == expected
        # The driver reads every reply too (a client that stops reading stalls its own close).
        while len(replies) < BROADCASTS:
            frame = await _recv(driver)
            replies[frame["ref"]] = frame
        assert [replies[i]["result"] for i in range(BROADCASTS)] == list(range(1, BROADCASTS + 1))
    finally:
        await _close_all(clients)


async def _attached_means_attached(server: LiveServer, key: str) -> None:
    """ATTACHING clients attach at once; a call made the moment the last one is attached
    broadcasts to every one of them (it was committed after each objects:attached frame).

    Before the attached frame, a client knew only that its handshake was done, while the
    server had yet to subscribe it: 1 client in 200 missed such a broadcast.
    """
    clients = await _attach_many(server, f"/objects/counter/{key}/ws", ATTACHING)
    try:
        caller = clients[-1]
        await caller.send(json.dumps({"ref": "go", "call": "increment", "args": {}}))
        replies: dict[Any, Any] = {}
        received = await asyncio.gather(
            *(_events(ws, "changed", 1, replies if ws is caller else None) for ws in clients)
        )
        assert received == [[{"value": 1}]] * ATTACHING
    finally:
        await _close_all(clients)


async def _authorize_after_a_lookup(websocket: WebSocket, type_name: str, key: str) -> bool:
    """An app's ``authorize`` that reads the database first, as a session lookup would."""
    objects: Objects = websocket.scope["app"].state.objects
    await objects.query(Counter, limit=1)
    return True


async def test_a_broadcast_sent_as_soon_as_the_client_is_attached_reaches_it(
    db_url: str,
) -> None:
    # Before the attached frame a client took connect() for attached: with an authorize that
    # awaits the database, 80 broadcasts in 200 sent right after connect() were missed.
    app, _ = make_app(db_url, authorize=_authorize_after_a_lookup)
    async with LiveServer(app) as server, httpx2.AsyncClient(base_url=server.url) as http:
        for _ in range(50):
            async with _attached(server.ws_url("/objects/counter/soon/ws")) as ws:
                value = (await http.post("/counters/soon/increment")).json()["value"]
                assert await _events(ws, "changed", 1) == [{"value": value}]


async def test_a_broadcast_right_after_the_attached_frame_reaches_every_client(
    live: tuple[LiveServer, Objects],
) -> None:
    server, _ = live
    await _attached_means_attached(server, "attach")


async def test_a_broadcast_right_after_the_attached_frame_reaches_every_client_on_postgresql(
    pg_url: str, pg_schema: str
) -> None:
    app, _ = make_app(pg_url, schema=pg_schema, create_tables=True)
    async with LiveServer(app) as server:
        await _attached_means_attached(server, "pgattach")


async def test_many_clients_each_receive_every_broadcast_in_order(
    live: tuple[LiveServer, Objects],
) -> None:
    server, _ = live
    await _fan_out(server, "fan")


async def test_an_http_posts_broadcast_reaches_websocket_clients(
    live: tuple[LiveServer, Objects],
) -> None:
    server, _ = live
    clients = await _attach_many(server, "/objects/counter/web/ws", 10)
    try:
        async with httpx2.AsyncClient(base_url=server.url) as http:
            for by in (5, 7):
                response = await http.post("/counters/web/increment", params={"by": by})
                assert response.json() == {"value": by if by == 5 else 12}
            assert (await http.get("/counters/web")).json() == {"value": 12}
        for ws in clients:
            assert await _events(ws, "changed", 2) == [{"value": 5}, {"value": 12}]
    finally:
        await _close_all(clients)


@pytest.mark.parametrize(
    ("path", "code", "reason"),
    [
        ("/objects/room/r/ws", 4403, "a name is required"),
        ("/objects/nope/r/ws", 4404, "nope"),
        ("/objects/counter/bad!key/ws", 4400, "characters"),
    ],
)
async def test_a_rejected_attach_is_seen_by_a_real_client(
    live: tuple[LiveServer, Objects], path: str, code: int, reason: str
) -> None:
    server, _ = live
    async with connect(server.ws_url(path), open_timeout=WAIT) as ws:
        with pytest.raises(ConnectionClosed):  # closed at once: no objects:attached frame
            await asyncio.wait_for(ws.recv(), WAIT)
        assert ws.close_code == code
        assert ws.close_reason is not None and reason in ws.close_reason


async def test_malformed_frames_over_a_real_socket(live: tuple[LiveServer, Objects]) -> None:
    server, _ = live
    async with _attached(server.ws_url("/objects/counter/m/ws"), max_size=None) as ws:
        for bad in ("{oops", "[]", '{"ref": 1}', '{"ref": 2, "call": "nope"}'):
            await ws.send(bad)
            reply = await _recv(ws)
            assert reply["ok"] is False, reply
        await ws.send(b"\x01\x02")  # a binary frame
        assert (await _recv(ws))["error"]["type"] == "invalid_frame"
        await ws.send(json.dumps({"ref": 3, "call": "get", "pad": "x" * (1 << 20)}))
        assert (await _recv(ws))["error"]["type"] == "frame_too_large"  # default 1 MiB
        assert await _call(ws, 4, "increment", by=3) == 3
        assert ws.close_code is None  # still open


def _raw_client_that_never_reads(port: int, path: str) -> socket.socket:
    """A websocket client that completes the handshake and then stops reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills fast
    sock.settimeout(WAIT)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # byte by byte: leave the frames after it unread
    assert response.startswith(b"HTTP/1.1 101"), response
    # Then exactly the first frame (objects:attached, short and unmasked): it is attached.
    opcode, length = sock.recv(1, socket.MSG_WAITALL), sock.recv(1, socket.MSG_WAITALL)[0]
    assert opcode == b"\x81" and length < 126, (opcode, length)
    assert b"objects:attached" in sock.recv(length, socket.MSG_WAITALL)
    return sock


def _read_until_too_slow(sock: socket.socket) -> bytes:
    """What a client that stopped reading gets, up to its 4408 close frame (not EOF: that comes
    only after the close handshake). Chunks are joined once: ``data += chunk`` and a search of
    all of it per 4 KB read was quadratic in the ~20 MB a slow close lets through."""
    chunks, tail = [], b""
    while b"too slow" not in tail and (chunk := sock.recv(1 << 20)):
        chunks.append(chunk)
        tail = tail[-64:] + chunk
    return b"".join(chunks)


async def test_a_client_that_stops_reading_is_dropped_4408_without_holding_back_others(
    db_url: str,
) -> None:
    app, objects = make_app(db_url, max_outbox=8)
    async with LiveServer(app) as server:
        path = "/objects/counter/s/ws"
        good = (await _attach_many(server, path, 1))[0]
        stuck = await asyncio.to_thread(_raw_client_that_never_reads, server.port, path)
        try:
            blob = "x" * 65536
            count = 300  # ~20 MB: more than the socket buffers can hide
            for i in range(count):
                await server.run(objects.publish("counter:s", "big", {"i": i, "blob": blob}))
            payloads = await _events(good, "big", count)
            assert [p["i"] for p in payloads] == list(range(count))

            data = await asyncio.to_thread(_read_until_too_slow, stuck)
        finally:
            stuck.close()
            await good.close()
    # A close frame with code 4408 (0x1138) and its reason, after fewer than all frames.
    assert b"\x11\x38client too slow" in data
    assert data.count(b'"event":"big"') < count


async def test_hibernate_after_the_last_detach_and_thaw_on_attach(
    live: tuple[LiveServer, Objects], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``hibernate_with_clients = False`` attached clients keep the object awake (the
    default lets it sleep with them: tests/test_hibernate.py)."""
    monkeypatch.setattr(Room, "hibernate_with_clients", False)
    server, objects = live
    assert Room.idle_timeout < 1
    url = server.ws_url("/objects/room/h/ws")
    async with _attached(url + "?name=ann") as ann:
        assert (await _recv(ann))["payload"] == {"history": []}
        assert await _call(ann, 1, "say", text="first") == 1
        async with _attached(url + "?name=bob") as bob:
            assert (await _recv(bob))["payload"] == {"history": ["first"]}
        # An attached client keeps the object awake well past idle_timeout.
        await asyncio.sleep(Room.idle_timeout * 3)
        assert objects.stats().hibernations == 0
        assert await _call(ann, 2, "history") == ["first"]
    thaws = objects.stats().thaws
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while objects.stats().hibernations < 1:
        assert loop.time() < deadline, "the room never hibernated"
        await asyncio.sleep(0.02)
    assert objects.stats().active == 0
    page = await server.run(objects.query(Room, status="hibernated"))
    assert [(cp.key, cp.state) for cp in page.items] == [("h", {"messages": ["first"]})]
    async with _attached(url + "?name=cat") as cat:
        assert (await _recv(cat))["payload"] == {"history": ["first"]}
        assert objects.stats().thaws == thaws + 1
        assert await _call(cat, 1, "say", text="second") == 2
    page = await server.run(objects.query(Room, key_prefix="h"))
    assert page.items[0].state == {"messages": ["first", "second"]}


async def test_fan_out_on_postgresql(pg_url: str, pg_schema: str) -> None:
    app, _ = make_app(pg_url, schema=pg_schema, create_tables=True)
    async with LiveServer(app) as server:
        await _fan_out(server, "pgfan")


async def test_a_broadcast_made_on_node_a_reaches_a_client_on_node_b(
    pg_url: str, pg_schema: str
) -> None:
    app_a, _ = make_app(pg_url, schema=pg_schema, create_tables=True)
    app_b, _ = make_app(pg_url, schema=pg_schema, create_tables=True)
    async with LiveServer(app_a) as node_a, LiveServer(app_b) as node_b:
        clients = await _attach_many(node_b, "/objects/counter/x/ws", 5)
        try:
            async with httpx2.AsyncClient(base_url=node_a.url) as http:
                for _ in range(3):
                    assert (await http.post("/counters/x/increment")).status_code == 200
            for ws in clients:
                assert await _events(ws, "changed", 3) == [
                    {"value": 1}, {"value": 2}, {"value": 3},
                ]
        finally:
            await _close_all(clients)


# -- the JavaScript client, in Node.js against the live server -------------------------------

_JS_DRIVER = """
require(process.argv[2]);
const log = (obj) => console.log(JSON.stringify(obj));
const client = ObjectsClient.connect(process.argv[3], { minBackoff: 50, maxBackoff: 200 });
let opens = 0;
client.on("changed", (payload) => log({ changed: payload.value }));
// Made before the client is attached: held until it is, then sent.
const first = client.call("increment", { by: 2 });
client.ready.then((id) => log({ attached: typeof id, when: client.status }));
client.onStatus(async (status) => {
  log({ status });
  if (status !== "open") return;
  opens += 1;
  if (opens === 1) {
    log({ result: await first });
    try {
      await client.call("increment", { by: "many" });
    } catch (err) {
      log({ error: err.type });
    }
    log({ ready: true });
  } else {
    log({ result: await client.call("increment", { by: 1 }) });
    client.close();
  }
});
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
async def test_the_javascript_client_calls_listens_and_reconnects(
    db_url: str, tmp_path: Path
) -> None:
    js = Path(__file__).parents[1] / "fastapi_objects" / "fastapi" / "static" / "objects.js"
    driver = tmp_path / "driver.js"
    driver.write_text(_JS_DRIVER)
    app, _ = make_app(db_url)
    server = LiveServer(app)
    await server.start()
    node = await asyncio.create_subprocess_exec(
        "node", "--experimental-websocket", "--no-warnings", str(driver), str(js),
        server.ws_url("/objects/counter/js/ws"), stdout=asyncio.subprocess.PIPE,
    )
    assert node.stdout is not None
    seen: list[dict[str, Any]] = []

    async def until(done: dict[str, Any]) -> None:
        while done not in seen:
            line = await asyncio.wait_for(node.stdout.readline(), WAIT)  # type: ignore[union-attr]
            assert line, f"node exited early; saw {seen}"
            seen.append(json.loads(line))

    try:
        await until({"ready": True})
        assert {"result": 2} in seen and {"changed": 2} in seen
        assert {"attached": "string", "when": "open"} in seen
        assert {"error": "invalid_arguments"} in seen
        # Restart the server on the same port: the client reconnects by itself (1012, backoff).
        await server.stop()
        server = LiveServer(make_app(db_url)[0], port=server.port)
        await server.start()
        await until({"result": 3})  # state survived the restart
        assert await asyncio.wait_for(node.wait(), WAIT) == 0
        statuses = [e["status"] for e in seen if "status" in e]
        assert statuses.count("open") == 2 and "closed" in statuses
    finally:
        if node.returncode is None:
            node.kill()
            await node.wait()
        await server.stop()


_JS_REFUSED = """
require(process.argv[2]);
const client = ObjectsClient.connect(process.argv[3], { minBackoff: 20, maxBackoff: 50 });
client.onStatus((status, close) => console.log(JSON.stringify({ status, close })));
client.ready.catch((err) => console.log(JSON.stringify({ ready: err.type, message: err.message })));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
async def test_the_javascript_client_does_not_retry_a_refusal(
    live: tuple[LiveServer, Objects], tmp_path: Path
) -> None:
    server, _ = live
    js = Path(__file__).parents[1] / "fastapi_objects" / "fastapi" / "static" / "objects.js"
    driver = tmp_path / "refused.js"
    driver.write_text(_JS_REFUSED)
    node = await asyncio.create_subprocess_exec(
        "node", "--experimental-websocket", "--no-warnings", str(driver), str(js),
        server.ws_url("/objects/room/r/ws"), stdout=asyncio.subprocess.PIPE,
    )
    # With nothing scheduled after the refusal, Node exits by itself.
    out, _ = await asyncio.wait_for(node.communicate(), WAIT)
    events = [json.loads(line) for line in out.splitlines()]
    # The server accepts, then closes with the refusal's code: once, no retry. The client
    # was never attached, so it was never "open", and `ready` says why it never will be.
    statuses = [e for e in events if "status" in e]
    assert [e["status"] for e in statuses] == ["connecting", "closed"]
    assert statuses[-1]["close"] == {"code": 4403, "reason": "a name is required"}
    assert {"ready": "refused", "message": "a name is required"} in events
