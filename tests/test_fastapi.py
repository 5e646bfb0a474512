"""The FastAPI integration over HTTP: DESIGN section 1 as written, get_object, error mapping.

Every test runs a real app through Starlette's TestClient (its lifespan included) on a real
SQLite file or a real PostgreSQL schema.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from fastapi_objects import DurableObject, Handle, Objects, client_callable, get_object
from fastapi_objects.storage import open_storage
from tests._apps import SLOW_RUNNING, Counter, make_app, release_slow
from tests._support import steal

CLOSED_PORT_URL = "postgresql+asyncpg://root@127.0.0.1:1/test"


def _error(response: Any, status: int, type: str) -> str:
    """Assert an ``{"error": {"type", "message"}}`` response; return its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == type, body
    assert body["error"]["message"]
    return str(body["error"]["message"])


# -- DESIGN section 1, as written ------------------------------------------------------------


class _S1State(BaseModel):
    value: int = 0


class S1Counter(DurableObject[_S1State]):
    """The section 1 Counter, verbatim but for its name."""

    type_name = "counter"
    idle_timeout = 30.0
    public = True

    @client_callable
    async def increment(self, by: int = 1) -> int:
        self.state.value += by
        self.broadcast("changed", {"value": self.state.value})
        return self.state.value

    async def get(self) -> int:
        return self.state.value


def _section_one_app() -> FastAPI:
    objects = Objects(objects=[S1Counter])  # storage from OBJECTS_DATABASE_URL
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)

    @app.post("/counters/{key}/increment")
    async def increment(
        counter: Annotated[Handle[S1Counter], Depends(get_object(S1Counter))], by: int = 1
    ) -> dict[str, int]:
        return {"value": await counter.increment(by)}

    return app


def test_section_one_code_works_as_written_and_persists(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OBJECTS_DATABASE_URL", db_url)
    app = _section_one_app()
    with TestClient(app) as client:
        assert client.post("/counters/abc/increment").json() == {"value": 1}
        assert client.post("/counters/abc/increment", params={"by": 5}).json() == {"value": 6}
        assert client.post("/counters/other/increment").json() == {"value": 1}
        assert isinstance(app.state.objects, Objects)
        with client.websocket_connect("/objects/counter/abc/ws") as ws:
            assert ws.receive_json()["event"] == "objects:attached"
            ws.send_json({"ref": 1, "call": "get", "args": {}})  # not @client_callable
            assert ws.receive_json()["error"]["type"] == "forbidden"
            ws.send_json({"ref": 2, "call": "increment", "args": {}})
            assert ws.receive_json()["payload"] == {"value": 7}
            assert ws.receive_json() == {"ref": 2, "ok": True, "result": 7}
    # A new process on the same database sees the acknowledged state.
    with TestClient(_section_one_app()) as client:
        assert client.post("/counters/abc/increment").json() == {"value": 8}


def test_make_app_routes_and_state(client: TestClient) -> None:
    app = client.app
    objects = app.state.objects  # type: ignore[attr-defined]
    assert isinstance(objects, Objects)
    assert client.get("/counters/a").json() == {"value": 0}
    assert client.post("/counters/a/increment", params={"by": 2}).json() == {"value": 2}
    assert client.post("/counters/a/increment").json() == {"value": 3}
    assert client.get("/counters/a").json() == {"value": 3}
    assert client.get("/counters/b").json() == {"value": 0}
    # The HTTP result was durable: the runtime reads it back from storage without thawing.
    assert client.portal is not None
    page = client.portal.call(lambda: objects.query(Counter))
    assert {(c.key, c.state["value"]) for c in page.items} == {("a", 3)}


def test_lifespan_composes_with_the_apps_own(db_url: str) -> None:
    objects = Objects(objects=[Counter], database_url=db_url)
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("app up")
        async with objects.lifespan(app):
            events.append("objects up")
            yield
            events.append("objects going down")
        events.append("app down")

    app = FastAPI(lifespan=lifespan)
    app.include_router(objects.router)

    @app.post("/counters/{key}/increment")
    async def increment(
        counter: Annotated[Handle[Counter], Depends(get_object(Counter))],
    ) -> dict[str, int]:
        return {"value": await counter.increment()}

    with TestClient(app) as client:
        assert events == ["app up", "objects up"]
        assert app.state.objects is objects
        assert client.post("/counters/x/increment").json() == {"value": 1}
        # The error handlers are installed even though the app's lifespan wraps ours.
        _error(client.post("/counters/bad key/increment"), 400, "invalid_key")
    assert events == ["app up", "objects up", "objects going down", "app down"]
    # The runtime stopped with the app: it hibernated the object, and the value is durable.
    with pytest.raises(RuntimeError, match="not started"):
        _ = objects.runtime.loop
    con = sqlite3.connect(db_url.split("///", 1)[1])
    try:
        row = con.execute(
            "SELECT rev, status FROM objects_checkpoints WHERE type = 'counter' AND key = 'x'"
        ).fetchone()
    finally:
        con.close()
    assert row == (1, "hibernated")


# -- get_object ------------------------------------------------------------------------------


def _user_from_header(connection: HTTPConnection) -> str:
    return connection.headers.get("x-user", "")


async def _user_from_cookie(connection: HTTPConnection) -> str:
    await asyncio.sleep(0)  # a real async lookup (a session store) would await here
    return "cookie-" + connection.cookies.get("user", "")


def test_get_object_key_sources(db_url: str) -> None:
    app, _ = make_app(db_url)

    @app.post("/named/{name}/increment")
    async def named(
        counter: Annotated[Handle[Counter], Depends(get_object(Counter, key="name"))],
    ) -> dict[str, Any]:
        return {"key": counter.key, "value": await counter.increment()}

    @app.post("/me/increment")
    async def me(
        counter: Annotated[Handle[Counter], Depends(get_object(Counter, key=_user_from_header))],
    ) -> dict[str, Any]:
        return {"key": counter.key, "value": await counter.increment()}

    @app.post("/me-async/increment")
    async def me_async(
        counter: Annotated[Handle[Counter], Depends(get_object(Counter, key=_user_from_cookie))],
    ) -> dict[str, Any]:
        return {"key": counter.key, "value": await counter.increment()}

    with TestClient(app) as client:
        assert client.post("/named/n1/increment").json() == {"key": "n1", "value": 1}
        assert client.post("/counters/n1/increment").json() == {"value": 2}  # same object
        assert client.post("/me/increment", headers={"x-user": "ann"}).json() == {
            "key": "ann", "value": 1,
        }
        assert client.post("/me/increment", headers={"x-user": "bob"}).json() == {
            "key": "bob", "value": 1,
        }
        assert client.post("/me/increment", headers={"x-user": "ann"}).json()["value"] == 2
        client.cookies.set("user", "cat")
        assert client.post("/me-async/increment").json() == {"key": "cookie-cat", "value": 1}
        assert client.get("/counters/cookie-cat").json() == {"value": 1}
        # A key source that yields an invalid key is the client's mistake: 400, not 500.
        _error(client.post("/me/increment"), 400, "invalid_key")
        _error(client.post("/me/increment", headers={"x-user": "a b"}), 400, "invalid_key")


def test_get_object_is_one_dependency_per_class_and_key_source() -> None:
    assert get_object(Counter) is get_object(Counter)
    assert get_object(Counter, key="name") is get_object(Counter, key="name")
    assert get_object(Counter) is not get_object(Counter, key="name")


class _FakeCounter:
    """What a test swaps in for the durable Counter."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def increment(self, by: int = 1) -> int:
        self.calls.append(by)
        return 1000 + by


def test_dependency_overrides_swap_the_object(client: TestClient) -> None:
    app = client.app
    fake = _FakeCounter()
    app.dependency_overrides[get_object(Counter)] = lambda: fake  # type: ignore[attr-defined]
    try:
        assert client.post("/counters/k/increment", params={"by": 3}).json() == {"value": 1003}
        assert fake.calls == [3]
    finally:
        app.dependency_overrides.clear()  # type: ignore[attr-defined]
    # The real object was never touched.
    assert client.get("/counters/k").json() == {"value": 0}
    assert client.post("/counters/k/increment").json() == {"value": 1}


# -- error mapping ---------------------------------------------------------------------------


def test_invalid_key_is_400(client: TestClient) -> None:
    assert "characters" in _error(client.post("/counters/no spaces!/increment"), 400, "invalid_key")
    _error(client.get("/counters/" + "k" * 300), 400, "invalid_key")
    _error(client.get("/counters/caf%C3%A9"), 400, "invalid_key")


def test_unknown_method_and_invalid_arguments_are_422(client: TestClient) -> None:
    assert "nope" in _error(client.post("/counters/a/call/nope"), 422, "unknown_method")
    # Hooks and helpers are not remotely callable.
    _error(client.post("/counters/a/call/on_connect"), 422, "unknown_method")
    _error(client.post("/counters/a/call/broadcast"), 422, "unknown_method")
    _error(client.post("/counters/a/call/_activation"), 422, "unknown_method")
    message = _error(
        client.post("/counters/a/call/increment", json={"by": "many"}), 422, "invalid_arguments"
    )
    assert "by" in message
    _error(client.post("/counters/a/call/increment", json={"step": 1}), 422, "invalid_arguments")
    _error(client.post("/counters/a/call/get", json={"x": 1}), 422, "invalid_arguments")
    # Nothing ran.
    assert client.get("/counters/a").json() == {"value": 0}
    assert client.post("/counters/a/call/increment", json={"by": 4}).json() == {"result": 4}


def _steal(db_url: str, key: str, node_id: str) -> None:
    async def run() -> None:
        storage = open_storage(db_url)
        try:
            await steal(storage, "counter", key, node_id)
        finally:
            await storage.close()

    asyncio.run(run())


def test_conflict_is_409_when_a_second_runtime_advanced_the_object(db_url: str) -> None:
    app_a, objects_a = make_app(db_url)
    app_b, objects_b = make_app(db_url)
    with TestClient(app_a) as a, TestClient(app_b) as b:
        assert a.post("/counters/shared/increment").json() == {"value": 1}
        assert b.post("/counters/shared/increment").json() == {"value": 2}  # forwarded to A
        # The database gives the object to B behind A's back (as when A's heartbeat is old).
        _steal(db_url, "shared", objects_b.node_id)
        # A's live instance is at rev 2 under the old epoch: its commit is fenced out.
        response = a.post("/counters/shared/increment")
        assert "fenced out" in _error(response, 409, "conflict")
        assert response.headers["retry-after"] == "1"
        # A dropped its stale instance: the next call goes to B; nothing lost or doubled.
        assert a.post("/counters/shared/increment").json() == {"value": 3}
        assert b.post("/counters/shared/increment").json() == {"value": 4}
        # And the same holds the other way round.
        _steal(db_url, "shared", objects_a.node_id)
        _error(b.post("/counters/shared/increment"), 409, "conflict")
        assert b.post("/counters/shared/increment").json() == {"value": 5}
        assert a.post("/counters/shared/increment").json() == {"value": 6}


def test_call_timeout_is_504_and_the_turn_is_rolled_back(client: TestClient) -> None:
    objects = client.app.state.objects  # type: ignore[attr-defined]
    started = time.monotonic()
    _error(client.post("/timed/t/slow", params={"seconds": 30}), 504, "timeout")
    assert time.monotonic() - started < 10  # cancelled at call_timeout, not after 30 s
    assert f"{objects.node_id}/t" not in SLOW_RUNNING  # the turn itself was cancelled
    assert client.post("/timed/t/slow", params={"seconds": 0}).json() == {"result": "done"}


def test_overloaded_is_503_with_retry_after(client: TestClient) -> None:
    objects = client.app.state.objects  # type: ignore[attr-defined]
    assert client.portal is not None
    with ThreadPoolExecutor(4) as pool:
        holder = pool.submit(client.post, "/narrow/n/slow", params={"seconds": 60})
        _poll(lambda: f"{objects.node_id}/n" in SLOW_RUNNING, "slow() to hold the turn")
        # While slow() holds the turn, one call may wait (max_queue=1); the rest are refused
        # at once, whichever order the threads run in.
        calls = [pool.submit(client.post, "/narrow/n/increment") for _ in range(3)]
        _poll(lambda: sum(f.done() for f in calls) == 2, "two calls to be refused")
        client.portal.call(release_slow, objects.node_id, "n")
        assert holder.result().json() == {"result": "done"}
        responses = [f.result() for f in calls]
    refused = [r for r in responses if r.status_code == 503]
    assert len(refused) == 2, [r.text for r in responses]
    for response in refused:
        _error(response, 503, "overloaded")
        assert int(response.headers["retry-after"]) >= 1
    assert [r.json() for r in responses if r.status_code == 200] == [{"value": 1}]


def _poll(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_storage_unavailable_is_503_when_the_database_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The pub/sub would also need PostgreSQL at start; keep it in-process to reach a call.
    app, objects = make_app(CLOSED_PORT_URL, create_tables=False, pubsub_url="memory://down")
    with TestClient(app) as client:
        response = client.post("/counters/a/increment")
        assert "storage unavailable" in _error(response, 503, "storage_unavailable")
        assert response.headers["retry-after"] == "1"
        # Where the database is goes to the log, under the id the client got; not to clients.
        message = response.json()["error"]["message"]
        assert "127.0.0.1" not in message and "postgresql" not in message
        error_id = message.split("(error ", 1)[1][:16]
        assert f"error {error_id} (storage_unavailable): " in caplog.text
        assert "127.0.0.1:1" in caplog.text
        _error(client.get("/counters/a"), 503, "storage_unavailable")
    assert objects.stats().active == 0


def test_a_runtime_that_cannot_reach_its_database_fails_at_start() -> None:
    # With PostgreSQL storage the pub/sub is PostgreSQL too: the lifespan refuses to start.
    app, _ = make_app(CLOSED_PORT_URL, create_tables=False)
    with pytest.raises(Exception, match="PostgreSQL"), TestClient(app):
        pass


async def _drop(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def test_storage_unavailable_is_503_when_the_table_is_gone(pg_url: str, pg_schema: str) -> None:
    app, _ = make_app(pg_url, schema=pg_schema, create_tables=True)
    with TestClient(app) as client:
        assert client.post("/counters/a/increment").json() == {"value": 1}
        asyncio.run(_drop(pg_url, f'DROP TABLE "{pg_schema}".objects_journal'))
        asyncio.run(_drop(pg_url, f'DROP TABLE "{pg_schema}".objects_checkpoints'))
        # A live object's commit and a thaw both hit the missing tables.
        _error(client.post("/counters/a/increment"), 503, "storage_unavailable")
        _error(client.post("/counters/b/increment"), 503, "storage_unavailable")


def test_sqlite_table_dropped_under_a_running_app_is_503(db_url: str) -> None:
    app, _ = make_app(db_url)
    with TestClient(app) as client:
        assert client.post("/counters/a/increment").json() == {"value": 1}
        con = sqlite3.connect(db_url.split("///", 1)[1])
        con.execute("DROP TABLE objects_journal")
        con.execute("DROP TABLE objects_checkpoints")
        con.commit()
        con.close()
        _error(client.post("/counters/new/increment"), 503, "storage_unavailable")


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("post", "/counters/bad key/increment", {}),
        ("post", "/counters/a/call/nope", {}),
        ("post", "/counters/a/call/increment", {"json": {"by": [1]}}),
        ("post", "/counters/a/call/increment", {"json": {"by": 1, "extra": 2}}),
        ("post", "/counters/a/call/slow", {"json": {}}),
        ("get", "/objects/nope.js", {}),
    ],
)
def test_user_mistakes_are_never_a_bare_500(
    client: TestClient, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    response = getattr(client, method)(path, **kwargs)
    assert 400 <= response.status_code < 500, response.text
    assert "error" in response.json() or "detail" in response.json()


def test_a_method_that_raises_rolls_back(db_url: str) -> None:
    app, _ = make_app(db_url)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/counters/f/increment").json() == {"value": 1}
        assert client.post("/counters/f/fail").status_code == 500  # a bug in the app's own code
        assert client.get("/counters/f").json() == {"value": 1}


def test_client_js_is_served(client: TestClient) -> None:
    response = client.get("/objects/client.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "ObjectsClient" in response.text and "reconnect" in response.text

