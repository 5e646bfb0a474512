"""What a browser may reach: public types, ``@client_callable`` methods, same-origin upgrades.

Each check runs through Starlette's TestClient and, where the transport matters (the Origin
and Host headers a real client sends), through uvicorn on a loopback port with a real
``websockets`` client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from fastapi_objects import Connection, DurableObject, Objects, client_callable, readonly
from fastapi_objects.fastapi.origins import origin_allowed
from tests._server import LiveServer
from tests.conftest import Backend


class _State(BaseModel):
    value: int = 0


class Vault(DurableObject[_State]):
    """Public, with one method for browsers and the rest for server code only."""

    public = True

    @client_callable
    async def increment(self) -> int:
        self.state.value += 1
        return self.state.value

    @readonly
    @client_callable
    async def peek(self) -> int:
        return self.state.value

    async def admin_reset(self) -> int:
        self.state.value = -100
        self.broadcast("reset")
        return self.state.value

    @readonly
    async def secret(self) -> str:
        return "server eyes only"

    async def on_connect(self, conn: Connection) -> None:
        conn.send("who", {"query": conn.query, "auth": conn.auth})


class Ledger(DurableObject[_State]):
    """Not public (the default): server code only, whatever its methods say."""

    @client_callable
    async def increment(self) -> int:
        self.state.value += 1
        return self.state.value


def _app(db_url: str, **options: Any) -> tuple[FastAPI, Objects]:
    objects = Objects(objects=[Vault, Ledger], database_url=db_url, **options)
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)

    @app.post("/vault/{key}/reset")
    async def reset(key: str) -> dict[str, int]:
        return {"value": await objects.get(Vault, key).admin_reset()}

    @app.get("/vault/{key}")
    async def read(key: str) -> dict[str, Any]:
        vault = objects.get(Vault, key)
        return {"value": await vault.peek(), "secret": await vault.secret()}

    @app.post("/ledger/{key}")
    async def book(key: str) -> dict[str, int]:
        return {"value": await objects.get(Ledger, key).increment()}

    return app, objects


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    app, _ = _app(db_url)
    with TestClient(app) as client:
        yield client


def _attached(ws: Any) -> dict[str, Any]:
    assert ws.receive_json()["event"] == "objects:attached"
    who = ws.receive_json()
    assert who["event"] == "who"
    return dict(who["payload"])


def _closed(client: TestClient, url: str, **kwargs: Any) -> WebSocketDisconnect:
    with client.websocket_connect(url, **kwargs) as ws, pytest.raises(WebSocketDisconnect) as info:
        ws.receive_json()
    return info.value


# -- methods ---------------------------------------------------------------------------------


def test_an_unmarked_method_is_forbidden_to_clients_and_runs_nothing(client: TestClient) -> None:
    with client.websocket_connect("/objects/vault/v/ws") as ws:
        _attached(ws)
        ws.send_json({"ref": 1, "call": "increment", "args": {}})
        assert ws.receive_json() == {"ref": 1, "ok": True, "result": 1}
        for ref, method in ((2, "admin_reset"), (3, "secret")):
            ws.send_json({"ref": ref, "call": method, "args": {}})
            reply = ws.receive_json()  # no "reset" broadcast before it: nothing ran
            assert reply["ref"] == ref and reply["ok"] is False, reply
            assert reply["error"]["type"] == "forbidden"
            assert "@client_callable" in reply["error"]["message"]
            assert "server eyes only" not in json.dumps(reply)
        ws.send_json({"ref": 4, "call": "nope", "args": {}})  # no such method: said so
        assert ws.receive_json()["error"]["type"] == "unknown_method"
        ws.send_json({"ref": 5, "call": "peek", "args": {}})
        assert ws.receive_json() == {"ref": 5, "ok": True, "result": 1}  # state unchanged
    # Server code still calls any public method.
    assert client.get("/vault/v").json() == {"value": 1, "secret": "server eyes only"}
    assert client.post("/vault/v/reset").json() == {"value": -100}


# -- types -----------------------------------------------------------------------------------


def test_a_type_that_is_not_public_refuses_attaches(client: TestClient) -> None:
    closed = _closed(client, "/objects/ledger/l/ws")
    assert closed.code == 4403
    assert "not public" in closed.reason
    assert client.post("/ledger/l").json() == {"value": 1}  # routes reach it as before
    closed = _closed(client, "/objects/nothing/l/ws")
    assert closed.code == 4404
    assert "ledger" not in closed.reason and "vault" not in closed.reason  # no listing


def test_public_defaults_to_false() -> None:
    assert DurableObject.public is False
    assert Ledger.public is False and Vault.public is True
    assert Vault.__objects_methods__["increment"].client_callable
    assert Vault.__objects_methods__["peek"].client_callable
    assert Vault.__objects_methods__["peek"].readonly
    assert not Vault.__objects_methods__["admin_reset"].client_callable


# -- query and auth --------------------------------------------------------------------------


def _authorize_true(websocket: WebSocket, type_name: str, key: str) -> bool:
    return True


def _authorize_user(websocket: WebSocket, type_name: str, key: str) -> dict[str, Any]:
    return {"user": "ann"}  # no "role": the client must not be able to supply one


@pytest.mark.parametrize("authorize", [None, _authorize_true, _authorize_user])
def test_a_query_parameter_never_reaches_conn_auth(db_url: str, authorize: Any) -> None:
    app, _ = _app(db_url, authorize=authorize)
    with TestClient(app) as client, client.websocket_connect(
        "/objects/vault/v/ws?role=admin&user=mallory"
    ) as ws:
        who = _attached(ws)
    assert who["query"] == {"role": "admin", "user": "mallory"}
    assert who["auth"] == ({"user": "ann"} if authorize is _authorize_user else {})


# -- origins ---------------------------------------------------------------------------------


def test_cross_origin_upgrades_are_refused_same_origin_and_originless_attach(
    client: TestClient,
) -> None:
    url = "/objects/vault/v/ws"
    for origin in ("https://evil.example", "http://testserver.evil.example", "null",
                   "http://testserver:8080"):
        closed = _closed(client, url, headers={"origin": origin})
        assert closed.code == 4403, origin
        assert "origin not allowed" in closed.reason
    for headers in ({}, {"origin": "http://testserver"}, {"origin": "https://TestServer"}):
        with client.websocket_connect(url, headers=headers) as ws:
            _attached(ws)


async def test_origins_through_uvicorn_with_a_real_client(db_url: str) -> None:
    app, _ = _app(db_url, allowed_origins=["https://partner.example"])
    async with LiveServer(app) as server:
        url = server.ws_url("/objects/vault/v/ws")
        own = f"http://127.0.0.1:{server.port}"
        for origin in (None, own, "https://partner.example"):
            async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert frame["event"] == "objects:attached", origin
        for origin in ("https://evil.example", "http://127.0.0.1:1", "http://localhost"):
            async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4403, origin


def test_a_star_lets_any_origin_in(db_url: str) -> None:
    app, _ = _app(db_url, allowed_origins=["*"])
    with TestClient(app) as client, client.websocket_connect(
        "/objects/vault/v/ws", headers={"origin": "https://anyone.example"}
    ) as ws:
        _attached(ws)


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://a.example", "a.example", True),
        ("https://a.example", "a.example", True),  # TLS ended at a proxy
        ("https://a.example:443", "a.example", True),
        ("http://a.example:8000", "a.example:8000", True),
        ("http://A.EXAMPLE:8000", "a.example:8000", True),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("http://a.example:8001", "a.example:8000", False),  # another port, another site
        ("http://a.example:8080", "a.example", False),
        ("http://b.example", "a.example", False),
        ("http://a.example.evil", "a.example", False),
        ("ftp://a.example", "a.example", False),
        ("null", "a.example", False),
        ("http://a.example:99999", "a.example", False),
        ("http://a.example", "a.example:notaport", False),
        ("http://a.example", "", False),
    ],
)
def test_same_origin_rule(origin: str, host: str, allowed: bool) -> None:
    assert origin_allowed({"origin": origin, "host": host}, None) is allowed


def test_allowed_origins_widen_the_rule() -> None:
    headers = {"origin": "https://Partner.example/", "host": "a.example"}
    assert origin_allowed(headers, ["https://partner.example"])
    assert not origin_allowed(headers, ["https://other.example"])
    assert origin_allowed(headers, ["*"])
    assert origin_allowed({"host": "a.example"}, [])  # no Origin: not a browser


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_no_header_makes_the_origin_check_fail(origin: str, host: str) -> None:
    assert origin_allowed({"origin": origin, "host": host}, None) in (True, False)


# -- the start -------------------------------------------------------------------------------


@pytest.mark.parametrize("authorize", [None, _authorize_true])
def test_one_warning_at_start_names_the_public_types_without_authorize(
    db_url: str, authorize: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = _app(db_url, authorize=authorize)
    with caplog.at_level(logging.WARNING, logger="fastapi_objects"), TestClient(app):
        pass
    warned = [r.getMessage() for r in caplog.records if "authorize" in r.getMessage()]
    if authorize is None:
        assert len(warned) == 1 and "vault" in warned[0] and "ledger" not in warned[0]
    else:
        assert warned == []


async def test_a_non_public_type_is_refused_by_a_real_server_too(db_url: str) -> None:
    app, _ = _app(db_url)
    async with LiveServer(app) as server:
        async with connect(server.ws_url("/objects/ledger/l/ws")) as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 4403 and "not public" in (ws.close_reason or "")


async def test_a_relayed_client_keeps_query_and_auth_apart_on_the_owner(
    sql_backend: Backend, caplog: pytest.LogCaptureFixture,
) -> None:
    """Attached through a node that does not own the object, the client is relayed to the
    owner: authorize's verdict arrives as conn.auth, its ?role=admin as conn.query only.
    Neither is in the relay's URL, so no log line (uvicorn logs upgrades) carries them."""
    caplog.set_level(logging.DEBUG)
    owner = Objects(objects=[Vault, Ledger], database_url=sql_backend.url,
                    schema=sql_backend.schema, node_id="owner", create_tables=True)
    edge = Objects(objects=[Vault, Ledger], database_url=sql_backend.url,
                   schema=sql_backend.schema, node_id="edge", authorize=_authorize_user)
    app = FastAPI(lifespan=edge.lifespan)
    app.include_router(edge.router)
    async with owner:
        assert await owner.get(Vault, "r").increment() == 1  # the owner holds it
        async with LiveServer(app) as server, connect(
            server.ws_url("/objects/vault/r/ws?role=admin")
        ) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["event"] == "objects:attached"
            who = json.loads(await asyncio.wait_for(ws.recv(), 10))["payload"]
            assert who == {"query": {"role": "admin"}, "auth": {"user": "ann"}}
            await ws.send(json.dumps({"ref": 1, "call": "admin_reset", "args": {}}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["error"]["type"] == (
                "forbidden")
            await ws.send(json.dumps({"ref": 2, "call": "increment", "args": {}}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["result"] == 2
        assert owner.stats().relayed == 1
    upgrades = [r.getMessage() for r in caplog.records if "objects-internal/ws" in r.getMessage()]
    assert upgrades, "uvicorn logs the relay's upgrade: this test reads it"
    leaked = [line for line in upgrades if "ann" in line or "admin" in line]
    assert not leaked, leaked
