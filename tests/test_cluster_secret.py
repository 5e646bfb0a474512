"""Nodes trust only nodes: a secret nobody can compute, and every internal door signed.

Without ``OBJECTS_CLUSTER_SECRET`` the nodes of a cluster share a random secret kept in the
database they share. What it replaced, an HMAC of the database URL, anyone could compute: a
call signed with it must be refused, on the call channel and on the relay path
(``/objects-internal/ws/...``, which skips ``public``, the Origin and ``authorize`` and rests
on the signature alone). A malformed signature header is a 401, never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import socket
from typing import Any
from urllib.parse import urlencode

import pytest
import websockets
from pydantic import BaseModel
from websockets.asyncio.client import connect

from fastapi_objects import Connection, DurableObject, Objects, Runtime, client_callable
from fastapi_objects.cluster import Signer
from fastapi_objects.cluster.channel import CHANNEL_PATH
from fastapi_objects.cluster.listener import WEBSOCKET_PREFIX
from fastapi_objects.cluster.signing import HEADER_CARRIED
from fastapi_objects.storage import Storage, open_storage
from tests._support import wait_until
from tests.conftest import Backend


class _State(BaseModel):
    value: int = 0


class Safe(DurableObject[_State]):
    public = True

    @client_callable
    async def add(self) -> int:
        self.state.value += 1
        return self.state.value

    async def on_connect(self, conn: Connection) -> None:
        conn.send("who", {"query": conn.query, "auth": conn.auth})


def _objects(backend: Backend, node_id: str) -> Objects:
    return Objects(objects=[Safe], database_url=backend.url, schema=backend.schema,
                   node_id=node_id)


def _url_derived_secret(backend: Backend) -> bytes:
    """The secret nodes used before: an HMAC of the database URL and schema."""
    return hmac.new(b"fastapi_objects/cluster", f"{backend.url}|{backend.schema}".encode(),
                    hashlib.sha256).digest()


def _ws(address: str, path: str) -> str:
    return "ws" + address.removeprefix("http") + path


async def _status(url: str, headers: dict[str, str] | None) -> tuple[int, str]:
    """The status and body of a refused upgrade; fails if the upgrade is accepted."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(url, additional_headers=headers):
            pass
    response = refused.value.response
    return response.status_code, response.body.decode()


async def test_nodes_share_a_random_secret_kept_in_their_database(durable: Backend) -> None:
    async with _objects(durable, "a") as a, _objects(durable, "b") as b:
        secret = await a.storage.cluster_secret()
        assert len(secret) == 64 and secret == await b.storage.cluster_secret()
        assert bytes.fromhex(secret) != _url_derived_secret(durable)
        assert await b.get(Safe, "k").add() == 1  # forwarded to a, or run on b: both work
        assert await a.get(Safe, "k").add() == 2
    async with _objects(durable, "c") as c:  # a restart keeps it
        assert await c.storage.cluster_secret() == secret
    other = Runtime(database_url=durable.url.replace("objects.db", "other.db"),
                    schema=durable.schema) if durable.name == "sqlite" else None
    if other is not None:  # another database, another cluster: another secret
        async with other:
            assert await other.storage.cluster_secret() != secret


async def test_a_call_signed_with_the_url_derived_secret_is_refused(durable: Backend) -> None:
    async with _objects(durable, "a") as a:
        assert await a.get(Safe, "k").add() == 1
        address = a.runtime._host.routing.node.address
        assert address is not None
        forged = Signer(_url_derived_secret(durable), "b")
        channel = _ws(address, CHANNEL_PATH)
        status, body = await _status(channel, forged.headers("GET", CHANNEL_PATH + "?", b"", "a"))
        assert (status, "bad signature" in body) == (401, True)
        target = f"{WEBSOCKET_PREFIX}safe/k?{urlencode({'query': '{}', 'auth': '{}'})}"
        status, _ = await _status(_ws(address, target), forged.headers("GET", target, b"", "a"))
        assert status == 401
        assert await a.get(Safe, "k").add() == 2  # nothing ran


def _carried(query: dict[str, Any], auth: dict[str, Any]) -> str:
    """What a relaying node sends in its signed header: the client's query and auth."""
    return base64.urlsafe_b64encode(json.dumps({"query": query, "auth": auth}).encode()).decode()


def _signed(secret: bytes, target: str, carried: str) -> dict[str, str]:
    """A relay upgrade's headers as node "b" signs them for node "a"."""
    return {**Signer(secret, "b").headers("GET", target, carried.encode(), "a"),
            HEADER_CARRIED: carried}


async def test_the_relay_path_rests_on_the_signature_alone(durable: Backend) -> None:
    async with _objects(durable, "a") as a:
        address = a.runtime._host.routing.node.address
        assert address is not None
        target = f"{WEBSOCKET_PREFIX}safe/r?"  # the URL carries nothing of the client
        url = _ws(address, target.removesuffix("?"))
        carried = _carried({"role": "admin"}, {"user": "ann"})
        secret = (await a.storage.cluster_secret()).encode()
        forged = _signed(secret, target, _carried({}, {"user": "x"}))
        refused = [
            None,  # unsigned
            {**Signer(b"not the secret", "b").headers("GET", target, carried.encode(), "a"),
             HEADER_CARRIED: carried},
            {**forged, HEADER_CARRIED: carried},  # signed for other auth than it carries
            {**_signed(secret, target, carried), HEADER_CARRIED: ""},  # what was signed is gone
        ]
        for headers in refused:
            status, _ = await _status(url, headers)
            assert status == 401
        assert a.stats().active == 0 and a.stats().relayed == 0  # no attach, no thaw
        # Signed by a node: the owner serves it as a relayed client, auth and query apart.
        async with connect(url, additional_headers=_signed(secret, target, carried)) as ws:
            assert json.loads(await ws.recv())["event"] == "objects:attached"
            who = json.loads(await ws.recv())["payload"]
            assert who == {"query": {"role": "admin"}, "auth": {"user": "ann"}}
        assert a.stats().relayed == 1


def _raw_upgrade(address: str, headers: dict[str, str], extra: bytes) -> bytes:
    """Send an upgrade request byte for byte (a header no client library would send)."""
    host, port = address.removeprefix("http://").rsplit(":", 1)
    lines = [f"GET {CHANNEL_PATH} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version: 13", *(f"{k}: {v}" for k, v in headers.items())]
    request = "\r\n".join(lines).encode() + b"\r\n" + extra + b"\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply


@pytest.mark.parametrize("signature", ["é".encode(), b"\xff\xfe", "签名".encode()])
async def test_a_non_ascii_signature_is_401_with_no_traceback(
    durable: Backend, signature: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with _objects(durable, "a") as a:
        address = a.runtime._host.routing.node.address
        assert address is not None
        secret = (await a.storage.cluster_secret()).encode()
        headers = Signer(secret, "b").headers("GET", CHANNEL_PATH + "?", b"", "a")
        headers.pop("x-objects-signature")
        with caplog.at_level(logging.DEBUG):
            reply = await _in_thread(_raw_upgrade, address, headers,
                                     b"x-objects-signature: " + signature)
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    assert "Traceback" not in caplog.text and "Exception in ASGI" not in caplog.text


async def _in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def test_a_misdirected_call_names_no_node(durable: Backend) -> None:
    async with _objects(durable, "node-a7") as a:
        address = a.runtime._host.routing.node.address
        assert address is not None
        secret = (await a.storage.cluster_secret()).encode()
        headers = Signer(secret, "node-b3").headers("GET", CHANNEL_PATH + "?", b"", "node-z9")
        status, body = await _status(_ws(address, CHANNEL_PATH), headers)
        assert status == 421
        assert not any(node in body for node in ("node-a7", "node-b3", "node-z9")), body


async def test_a_node_without_the_version_4_table_says_what_to_do_and_keeps_trying(
    pg_schema: str, pg_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi_objects.cluster import secret as secret_module
    from fastapi_objects.storage.tables import storage_metadata
    from tests.conftest import _exec

    monkeypatch.setattr(secret_module, "RETRY_EVERY", 0.05)
    storage = open_storage(pg_url, schema=pg_schema)
    await storage.create_tables()
    await storage.close()
    await _exec(pg_url, f'DROP TABLE "{pg_schema}".objects_cluster')  # migrated to version 3
    async with Runtime(objects=[Safe], database_url=pg_url, schema=pg_schema,
                       create_tables=False, node_id="a") as node:
        assert await node.get(Safe, "k").add() == 1  # it serves its own objects
        assert "storage tables version 4" in caplog.text
        assert "OBJECTS_CLUSTER_SECRET" in caplog.text
        address = node._host.routing.node.address
        assert address is not None
        headers = Signer(b"anything", "b").headers("GET", CHANNEL_PATH + "?", b"", "a")
        status, body = await _status(_ws(address, CHANNEL_PATH), headers)
        assert status == 401 and "secret" in body  # it takes no call it cannot check
        # The migration runs: the node picks the secret up without a restart.
        ddl = storage_metadata(pg_schema).tables[f"{pg_schema}.objects_cluster"]
        engine = open_storage(pg_url, schema=pg_schema)
        try:
            async with engine.engine.begin() as conn:  # type: ignore[attr-defined]
                await conn.run_sync(ddl.create)
            secret = await engine.cluster_secret()
        finally:
            await engine.close()
        await wait_until(lambda: node._host.routing.signer.secret == secret.encode(),
                         what="the node to read the new secret")
        good = Signer(secret.encode(), "b").headers("GET", CHANNEL_PATH + "?", b"", "a")
        async with connect(_ws(address, CHANNEL_PATH), additional_headers=good):
            pass  # accepted


async def test_the_storage_contract_keeps_one_secret(storage: Storage) -> None:
    first = await storage.cluster_secret()
    assert len(first) == 64 and int(first, 16) >= 0
    again = await asyncio.gather(*(storage.cluster_secret() for _ in range(8)))
    assert set(again) == {first}
