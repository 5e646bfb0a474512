"""The example app over HTTP and websockets.

In-process through Starlette's TestClient (on a temp SQLite file), and as a real process
(``python -m example_app``) on a loopback port, on SQLite and on a fresh PostgreSQL database.
``AppProcess`` and ``pg_database`` are shared with the browser and Fly.io tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url
from starlette.websockets import WebSocketDisconnect
from websockets.sync.client import connect as ws_connect

from example_app.main import SESSION_COOKIE, create_app
from example_app.objects import Cart, ChatRoom

ROOT = Path(__file__).resolve().parent.parent


# -- shared helpers --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(method: str, url: str, body: Any = None, timeout: float = 5) -> tuple[int, Any]:
    """One HTTP request with the standard library; returns (status, decoded JSON or text)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status, raw, kind = reply.status, reply.read(), reply.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        status, raw, kind = exc.code, exc.read(), exc.headers.get_content_type()
    return status, json.loads(raw) if kind == "application/json" else raw.decode()


def wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        time.sleep(0.05)


class AppProcess:
    """A real server process (``argv``) on 127.0.0.1:``port``, its output kept in ``log``."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.argv, self.port, self.log = argv, port, log
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self, within: float = 30) -> AppProcess:
        """Start it and wait until ``GET /healthz`` answers 200."""
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + within
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.argv} exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if http("GET", self.url + "/healthz", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{self.argv} did not pass /healthz in {within}s:\n{self.output()}")
            time.sleep(0.1)

    def stop(self) -> int:
        """Ctrl+C (uvicorn shuts down gracefully, hibernating objects); the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


async def _pg_admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (``postgresql://`` URL), dropped afterwards."""
    name = f"objects_example_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_admin(pg_url, f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(pg_url).set(drivername="postgresql", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg_admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- in-process: TestClient ------------------------------------------------------------------


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'objects.db'}"


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(db_url)) as client:
        yield client


def _until_reply(ws: Any, ref: str) -> list[dict[str, Any]]:
    """Frames received up to and including the reply to ``ref``."""
    frames = []
    while True:
        frames.append(ws.receive_json())
        if frames[-1].get("ref") == ref and "ok" in frames[-1]:
            return frames


@contextmanager
def _attach(client: TestClient, url: str) -> Iterator[Any]:
    """Connect; the first frame must say the client is attached."""
    with client.websocket_connect(url) as ws:
        frame = ws.receive_json()
        assert frame["event"] == "objects:attached", frame
        yield ws


def _events(frames: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(f["event"], f["payload"]) for f in frames if "event" in f]


def _presence(ws: Any) -> tuple[str, Any]:
    frame = ws.receive_json()
    assert frame["event"].startswith("objects:presence_"), frame
    return frame["event"], frame["payload"]


def _who(presence: dict[str, Any]) -> dict[str, list[str]]:
    """``{name: [connection ids]}`` of a presence state (or a diff's joins or leaves)."""
    return {key: [m["connection"] for m in p["metas"]] for key, p in presence.items()}


def test_pages_static_files_and_the_js_client(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for needle in ('src="/objects/client.js"', 'id="counter-value"', "Chat rooms", "Your cart"):
        assert needle in page.text
    assert SESSION_COOKIE in page.headers["set-cookie"]
    assert "ObjectsClient" in client.get("/objects/client.js").text
    for path in ("/static/index.js", "/static/room.js", "/static/stats.js", "/static/style.css"):
        assert client.get(path).status_code == 200, path
    room = client.get("/rooms/lounge")
    assert room.status_code == 200 and "#lounge" in room.text and "/static/room.js" in room.text
    assert client.get("/rooms/Not A Room").status_code == 404


def test_counter_routes_are_stable(client: TestClient) -> None:
    assert client.post("/counters/a/increment", params={"by": 5}).json() == {"value": 5}
    assert client.post("/counters/a/increment").json() == {"value": 6}
    assert client.get("/counters/a").json() == {"value": 6}
    assert client.get("/counters/b").json() == {"value": 0}
    assert client.post("/counters/a/increment", params={"by": "many"}).status_code == 422
    bad_key = client.post("/counters/no%20spaces/increment")
    assert bad_key.status_code == 400 and bad_key.json()["error"]["type"] == "invalid_key"
    assert client.get("/healthz").json() == {"ok": True}


def test_counter_websocket_speaks_the_standard_frames(client: TestClient) -> None:
    with _attach(client, "/objects/counter/live/ws") as ws:
        ws.send_json({"ref": "1", "call": "increment", "args": {"by": 2}})
        assert _until_reply(ws, "1") == [
            {"topic": "counter:live", "event": "changed", "payload": {"value": 2}},
            {"ref": "1", "ok": True, "result": 2},
        ]
        assert client.post("/counters/live/increment", params={"by": 3}).json() == {"value": 5}
        assert ws.receive_json()["payload"] == {"value": 5}  # an HTTP call's broadcast


def test_chat_room_history_presence_typing_and_exclude(client: TestClient) -> None:
    url = "/objects/chat_room/lounge/ws"
    with client.websocket_connect(url) as sessionless, \
            pytest.raises(WebSocketDisconnect) as info:
        sessionless.receive_json()
    assert info.value.code == 4401  # no session cookie yet: the page was never loaded
    posted = client.post("/api/rooms/lounge/messages", json={"name": "curl", "text": "first"})
    assert posted.status_code == 201 and posted.json()["text"] == "first"
    with client.websocket_connect(url) as nameless, pytest.raises(WebSocketDisconnect) as info:
        nameless.receive_json()
    assert info.value.code == 4403

    with client.websocket_connect(url + "?name=Alice") as alice:
        attached = alice.receive_json()
        assert attached["event"] == "objects:attached"
        me = attached["payload"]["connection"]
        # on_connect tracks Alice: the (empty) state, her join, then on_connect's welcome.
        assert _presence(alice) == ("objects:presence_state", {})
        event, diff = _presence(alice)
        assert event == "objects:presence_diff" and _who(diff["joins"]) == {"Alice": [me]}
        welcome = alice.receive_json()
        assert welcome["event"] == "welcome" and welcome["payload"]["you"] == me
        assert [m["text"] for m in welcome["payload"]["history"]] == ["first"]
        with _attach(client, url + "?name=Bob") as bob:
            event, state = _presence(bob)
            assert event == "objects:presence_state" and _who(state) == {"Alice": [me]}
            event, diff = _presence(bob)
            assert list(diff["joins"]) == ["Bob"]
            assert bob.receive_json()["event"] == "welcome"
            assert _presence(alice) == (event, diff)  # Alice sees Bob join

            bob.send_json({"event": "typing", "payload": {"on": True}})
            typing = alice.receive_json()
            assert typing["event"] == "typing"
            assert [p["name"] for p in typing["payload"]["typing"]] == ["Bob"]

            bob.send_json({"ref": "s", "event": "say", "payload": {"text": "  hi all  "}})
            # Bob sees his message but not his own typing updates (broadcast with exclude).
            bob_frames = _until_reply(bob, "s")
            assert _events(bob_frames) == [("message", bob_frames[0]["payload"])]
            assert bob_frames[0]["payload"]["text"] == "hi all"
            alice.send_json({"ref": "p", "call": "present", "args": {}})
            alice_frames = _until_reply(alice, "p")
            assert alice_frames[-1]["result"] == ["Alice", "Bob"]
            alice_events = _events(alice_frames)
            assert ("typing", {"typing": []}) in alice_events
            assert [e for e, p in alice_events if e == "message" and p["name"] == "Bob"]

            bob.send_json({"ref": "x", "event": "dance"})
            assert bob.receive_json()["error"]["type"] == "unknown_method"
            bob.send_json({"ref": "e", "event": "say", "payload": {"text": "   "}})
            assert bob.receive_json()["error"]["type"] == "invalid_arguments"
            bob.send_json({"ref": "h", "call": "history", "args": {"limit": 1}})
            assert bob.receive_json()["result"][0]["text"] == "hi all"  # still usable
        event, left = _presence(alice)  # Bob's socket closed: his leave
        assert event == "objects:presence_diff" and list(left["leaves"]) == ["Bob"]
        assert left["joins"] == {}

    history = client.get("/api/rooms/lounge/messages").json()
    assert [(m["name"], m["text"]) for m in history] == [("curl", "first"), ("Bob", "hi all")]
    rooms = client.get("/api/rooms").json()
    assert [(r["name"], r["posted"], r["last"]["text"]) for r in rooms] == [
        ("lounge", 2, "hi all")]


def _stored(client: TestClient, type_name: str, status: str) -> int:
    for row in client.get("/api/stats").json()["stored"]:
        if (row["type"], row["status"]) == (type_name, status):
            return int(row["count"])
    return 0


def test_a_room_hibernates_when_empty_and_thaws_with_its_history(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ChatRoom, "idle_timeout", 0.3)
    with TestClient(create_app(db_url)) as client:
        assert client.get("/rooms/den").status_code == 200  # the page: a session cookie
        with _attach(client, "/objects/chat_room/den/ws?name=Ann") as ws:
            ws.receive_json()
            ws.send_json({"ref": "1", "event": "say", "payload": {"text": "remember me"}})
            _until_reply(ws, "1")
            # Idle, it hibernates with Ann attached; her next frame thaws it, Ann still in it.
            wait_for(lambda: client.get("/api/rooms").json()[0]["status"] == "hibernated", 10,
                     "the idle room to hibernate with its client attached")
            ws.send_json({"ref": "2", "call": "present", "args": {}})
            assert _until_reply(ws, "2")[-1]["result"] == ["Ann"]
        wait_for(lambda: client.get("/api/rooms").json()[0]["status"] == "hibernated", 10,
                 "the empty room to hibernate")
        thaws = client.get("/api/stats").json()["thaws"]
        with _attach(client, "/objects/chat_room/den/ws?name=Ann") as ws:
            # A thawed room has nobody in it: presence lives with the connections.
            assert _presence(ws) == ("objects:presence_state", {})
            assert list(_presence(ws)[1]["joins"]) == ["Ann"]
            history = ws.receive_json()["payload"]["history"]
            assert [m["text"] for m in history] == ["remember me"]
        assert client.get("/api/stats").json()["thaws"] == thaws + 1
    with TestClient(create_app(db_url)) as client:  # and across a restart
        assert client.get("/api/rooms/den/messages").json()[0]["text"] == "remember me"


def test_carts_are_per_session_and_sleep_between_visits(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Cart, "idle_timeout", 0.3)
    with TestClient(create_app(db_url)) as client:
        first = client.get("/api/cart")
        assert first.json() == {"lines": [], "total_cents": 0, "wakeups": 0}
        mine = first.cookies[SESSION_COOKIE]
        added = client.post("/api/cart/items", json={"sku": "espresso", "quantity": 2}).json()
        assert added["lines"] == [
            {"sku": "espresso", "name": "Espresso", "quantity": 2, "cents": 500}]
        assert added["wakeups"] == 1
        bad = client.post("/api/cart/items", json={"sku": "caviar"})
        assert bad.status_code == 422 and bad.json()["error"]["type"] == "invalid_arguments"

        client.cookies.clear()  # a second visitor
        assert client.post("/api/cart/items", json={"sku": "cookie"}).json()["lines"]
        theirs = client.cookies[SESSION_COOKIE]
        assert theirs != mine

        client.cookies.clear()
        client.cookies.set(SESSION_COOKIE, mine)
        wait_for(lambda: _stored(client, "cart", "hibernated") == 2, 10, "both carts to sleep")
        back = client.get("/api/cart").json()
        assert back["lines"][0]["quantity"] == 2 and back["wakeups"] == 2
        assert client.delete("/api/cart/items/espresso").json()["lines"] == []

        for key in (mine, theirs):  # the page reaches carts over HTTP only: not public
            with client.websocket_connect(f"/objects/cart/{key}/ws") as ws, \
                    pytest.raises(WebSocketDisconnect) as info:
                ws.receive_json()
            assert info.value.code == 4403


def _visitor(app_client: TestClient) -> TestClient:
    """A second browser on the same app: cookies of its own."""
    other = TestClient(app_client.app)
    other.portal = app_client.portal  # the running app (its lifespan is the first client's)
    assert other.get("/").status_code == 200
    return other


def _refused(client: TestClient, url: str) -> WebSocketDisconnect:
    with client.websocket_connect(url) as ws, pytest.raises(WebSocketDisconnect) as info:
        ws.receive_json()
    return info.value


def test_a_name_belongs_to_the_session_that_used_it_first(client: TestClient) -> None:
    assert client.get("/").status_code == 200
    posted = client.post("/api/rooms/lounge/messages", json={"name": "Ann", "text": "hi"})
    assert posted.status_code == 201
    other = _visitor(client)
    for name in ("Ann", " ann ", "ANN"):  # over HTTP: another browser cannot speak as Ann
        forged = other.post("/api/rooms/lounge/messages", json={"name": name, "text": "x"})
        assert forged.status_code == 403 and "another visitor" in forged.text, forged.text
    refused = _refused(other, "/objects/chat_room/lounge/ws?name=Ann")  # nor over a websocket
    assert refused.code == 4403 and "another visitor" in refused.reason
    with _attach(other, "/objects/chat_room/lounge/ws?name=Bea") as ws:
        _, state = _presence(ws)
        _, joined = _presence(ws)
        assert state == {} and list(joined["joins"]) == ["Bea"]
        assert ws.receive_json()["event"] == "welcome"
        ws.send_json({"ref": "p", "call": "post", "args": {"name": "Ann", "text": "forged"}})
        assert ws.receive_json()["error"]["type"] == "forbidden"  # not @client_callable
        ws.send_json({"ref": "s", "event": "say", "payload": {"text": "as myself"}})
        said = _until_reply(ws, "s")
        assert [f["payload"]["name"] for f in said if f.get("event") == "message"] == ["Bea"]
    with _attach(client, "/objects/chat_room/lounge/ws?name=Ann") as ws:  # Ann's own browser
        assert _presence(ws) == ("objects:presence_state", {})
        assert list(_presence(ws)[1]["joins"]) == ["Ann"]
        assert ws.receive_json()["event"] == "welcome"
    history = client.get("/api/rooms/lounge/messages").json()
    assert [(m["name"], m["text"]) for m in history] == [("Ann", "hi"), ("Bea", "as myself")]


@pytest.mark.parametrize("room", ["Lounge", "no_underscores", "-dash-first", "x" * 41])
def test_the_rooms_api_and_websockets_apply_the_room_name_rule(
    client: TestClient, room: str
) -> None:
    assert client.get("/").status_code == 200
    assert client.get(f"/api/rooms/{room}/messages").status_code in (404, 422)
    posted = client.post(f"/api/rooms/{room}/messages", json={"name": "Ann", "text": "hi"})
    assert posted.status_code in (404, 422)
    assert _refused(client, f"/objects/chat_room/{room}/ws?name=Ann").code == 4400
    assert client.get("/api/rooms").json() == []
    stored = {row["type"] for row in client.get("/api/stats").json()["stored"]}
    assert "chat_room" not in stored


def test_junk_rooms_cannot_push_active_rooms_off_the_home_page(client: TestClient) -> None:
    assert client.get("/").status_code == 200
    for n in range(60):  # more than the page shows; all sort before "lounge"
        junk = client.post(f"/api/rooms/0-junk-{n:02d}/messages",
                           json={"name": "spam", "text": f"junk {n}"})
        assert junk.status_code == 201
    for n in range(30):  # attached, never posted: nothing stored, nothing listed
        with _attach(client, f"/objects/chat_room/00-empty-{n}/ws?name=lurker") as ws:
            ws.receive_json()
    posted = client.post("/api/rooms/lounge/messages", json={"name": "Ann", "text": "real"})
    assert posted.status_code == 201
    rooms = client.get("/api/rooms").json()
    assert rooms[0]["name"] == "lounge" and rooms[0]["last"]["text"] == "real"
    assert len(rooms) <= 20 and not [r for r in rooms if r["name"].startswith("00-empty")]
    assert "#lounge" in client.get("/").text


def test_no_cart_is_made_for_a_look(client: TestClient) -> None:
    def carts() -> int:
        rows = client.get("/api/stats").json()["stored"]
        return sum(int(row["count"]) for row in rows if row["type"] == "cart")

    empty = {"lines": [], "total_cents": 0, "wakeups": 0}
    anonymous = TestClient(client.app)
    anonymous.portal = client.portal
    for _ in range(20):  # cookie-less GETs: no session is even minted for them
        anonymous.cookies.clear()
        assert anonymous.get("/api/cart").json() == empty
        assert anonymous.delete("/api/cart/items/cookie").json() == empty
    assert client.get("/").status_code == 200  # a visitor with a session, no cart yet
    assert client.get("/api/cart").json() == empty
    assert carts() == 0 and client.get("/api/stats").json()["active"] <= 1  # the counter at most
    assert client.post("/api/cart/items", json={"sku": "cookie"}).json()["wakeups"] == 1
    assert carts() == 1


def test_healthz_does_not_depend_on_any_object(db_url: str, tmp_path: Path) -> None:
    with TestClient(create_app(db_url)) as client:
        assert client.post("/counters/home/increment").json() == {"value": 1}
    with sqlite3.connect(tmp_path / "objects.db") as conn:  # the counter's row goes bad
        conn.execute("UPDATE objects_checkpoints SET state = '{not json' WHERE key = 'home'")
    with TestClient(create_app(db_url), raise_server_exceptions=False) as client:
        # It used to read a counter (and answer 500 with this one broken).
        assert client.get("/healthz").json() == {"ok": True}
        assert client.get("/counters/home").status_code >= 500  # the broken one alone fails
        assert client.post("/counters/other/increment").json() == {"value": 1}


def test_healthz_fails_when_the_database_has_no_tables(
    pg_schema: str, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OBJECTS_SCHEMA", pg_schema)  # an empty schema: migration not run
    with TestClient(create_app(pg_url)) as client:
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["ok"] is False
        # The health check is public: where the database is stays in the log.
        url = make_url(pg_url)
        for internal in (pg_schema, str(url.host), str(url.database), "postgresql", "[SQL"):
            assert internal not in health.text, internal
        assert "error " in health.json()["error"]  # the id the log has the reason under


# -- as a real process: python -m example_app ------------------------------------------------


def _tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}


def test_python_m_example_app_serves_on_sqlite(tmp_path: Path) -> None:
    db, port = tmp_path / "app.db", free_port()
    env = {"PORT": str(port), "OBJECTS_DATABASE_URL": f"sqlite:///{db}", "HOST": ""}
    app = AppProcess([sys.executable, "-m", "example_app"], env, port, tmp_path / "out.log")
    app.start()
    try:
        assert f"example app: http://127.0.0.1:{port}/" in app.output()
        assert {"objects_checkpoints", "objects_journal"} <= _tables(db)
        with ws_connect(f"ws://127.0.0.1:{port}/objects/counter/k/ws") as ws:
            assert json.loads(ws.recv(timeout=5))["event"] == "objects:attached"
            ws.send(json.dumps({"ref": 1, "call": "get", "args": {}}))
            assert json.loads(ws.recv(timeout=5))["result"] == 0
            assert http("POST", app.url + "/counters/k/increment?by=4") == (200, {"value": 4})
            assert json.loads(ws.recv(timeout=5))["payload"] == {"value": 4}
        status, page = http("GET", app.url + "/")
        assert status == 200 and "Live counter" in page
    finally:
        assert app.stop() == 0, app.output()
    with sqlite3.connect(db) as conn:
        (state,) = conn.execute(
            "SELECT state FROM objects_checkpoints WHERE type = 'counter' AND key = 'k'"
        ).fetchone()
    assert json.loads(state) == {"value": 4}


def test_python_m_example_app_says_when_its_port_is_taken(tmp_path: Path) -> None:
    """It prints the address it serves only once it can listen there."""
    import socket
    import subprocess

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1",
               "OBJECTS_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"}
        done = subprocess.run([sys.executable, "-m", "example_app"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "PORT=" in done.stderr
    assert "example app: http://" not in done.stdout


@pytest.mark.postgres
def test_python_m_example_app_migrates_postgres_first(tmp_path: Path, pg_database: str) -> None:
    port = free_port()
    env = {"PORT": str(port), "OBJECTS_DATABASE_URL": pg_database}
    app = AppProcess([sys.executable, "-m", "example_app"], env, port, tmp_path / "out.log")
    app.start()
    try:
        assert "alembic upgrade head" in app.output()
        assert http("POST", app.url + "/counters/pg/increment?by=2") == (200, {"value": 2})
        assert http("GET", app.url + "/counters/pg") == (200, {"value": 2})
    finally:
        assert app.stop() == 0, app.output()


async def test_counter_events_stream_changes_as_server_sent_events(tmp_path: Path) -> None:
    import httpx2

    from tests._server import LiveServer

    app = create_app(f"sqlite+aiosqlite:///{tmp_path / 'sse.db'}")
    async with (
        LiveServer(app) as server,
        httpx2.AsyncClient(base_url=server.url) as http,
        http.stream("GET", "/counters/sse/events") as events,
    ):
        assert events.headers["content-type"].startswith("text/event-stream")
        lines = events.aiter_lines()
        async with asyncio.timeout(10):
            assert await anext(lines) == ": subscribed"
            for by in (2, 3):
                done = await http.post(f"/counters/sse/increment?by={by}")
                assert done.json() == {"value": {2: 2, 3: 5}[by]}
            received = []
            while len(received) < 2:
                line = await anext(lines)
                if line.startswith("data: "):
                    received.append(json.loads(line.removeprefix("data: ")))
                elif line:
                    assert line == "event: changed"
        assert received == [{"value": 2}, {"value": 5}]
