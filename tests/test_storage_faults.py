"""A storage fault tells clients nothing about the database, the statement or other callers.

A trigger in the real database (SQLite, PostgreSQL) fails every write of one object, with a
message holding that object's key and state, as drivers' messages can (a constraint's
"failing row contains ...", SQLAlchemy's ``[SQL: ...] [parameters: ...]``). Its writes share
group commits with other callers' writes, which then fail too: their 503 bodies must carry an
error id, and no key, state, SQL or database URL; the log has the driver's message under the id.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_objects import DurableObject, Objects
from tests._server import LiveServer
from tests.conftest import Backend, _exec

VICTIM = "victim-7f3a"
SECRET = "state-of-the-victim-91c2"
BYSTANDERS = 24


class _State(BaseModel):
    text: str = ""


class Note(DurableObject[_State]):
    async def write(self, text: str) -> str:
        self.state.text = text
        return text


def _app(backend: Backend) -> FastAPI:
    objects = Objects(
        objects=[Note], database_url=backend.url, schema=backend.schema, create_tables=True
    )
    app = FastAPI(lifespan=objects.lifespan)

    @app.post("/notes/{key}")
    async def write(key: str, text: str) -> dict[str, str]:
        return {"text": await objects.get(Note, key).write(text)}

    return app


async def _inject_fault(backend: Backend) -> None:
    message = f"injected fault writing {VICTIM}: {{\"text\": \"{SECRET}\"}}"
    if backend.name == "sqlite":
        with sqlite3.connect(backend.url.split("///", 1)[1]) as conn:
            for event in ("INSERT", "UPDATE"):
                conn.execute(
                    f"CREATE TRIGGER fault_{event.lower()} BEFORE {event} ON objects_checkpoints "
                    f"WHEN NEW.key = '{VICTIM}' BEGIN SELECT RAISE(ABORT, '{message}'); END"
                )
        return
    table = f'"{backend.schema}".objects_checkpoints'
    await _exec(backend.url, f"""
        CREATE FUNCTION "{backend.schema}".fault() RETURNS trigger AS $$
        BEGIN
            IF NEW.key = '{VICTIM}' THEN
                RAISE EXCEPTION 'injected fault writing %: %', NEW.key, NEW.state;
            END IF;
            RETURN NEW;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER fault BEFORE INSERT OR UPDATE ON {table}
            FOR EACH ROW EXECUTE FUNCTION "{backend.schema}".fault();
    """)


@asynccontextmanager
async def _writes_held(backend: Backend) -> AsyncIterator[None]:
    """Hold the database's write lock from outside: commits pile up into one group commit."""
    if backend.name == "sqlite":
        conn = sqlite3.connect(backend.url.split("///", 1)[1], isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    import asyncpg

    conn = await asyncpg.connect(backend.url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with conn.transaction():
            await conn.execute(
                f'LOCK TABLE "{backend.schema}".objects_checkpoints IN EXCLUSIVE MODE'
            )
            yield
    finally:
        await conn.close()


async def test_a_storage_fault_leaks_no_key_state_sql_or_url(
    sql_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    backend = sql_backend
    app = _app(backend)
    refused: dict[str, list[dict[str, Any]]] = {"victim": [], "bystander": []}
    keys = [VICTIM, *(f"bystander-{n}" for n in range(BYSTANDERS))]
    async with LiveServer(app) as server, httpx2.AsyncClient(base_url=server.url) as http:

        async def write(key: str, round: int) -> None:  # a new state each round: a commit
            text = f"{SECRET}-{round}" if key == VICTIM else f"mine-{key}-{round}"
            response = await http.post(f"/notes/{key}", params={"text": text})
            if response.status_code != 200:
                assert response.status_code == 503, response.text
                refused["victim" if key == VICTIM else "bystander"].append(
                    response.json()["error"]
                )

        await asyncio.gather(*(write(key, 0) for key in keys))  # all active, all stored
        assert refused == {"victim": [], "bystander": []}
        await _inject_fault(backend)
        for round in range(1, 11):  # until a bystander shared the victim's failed group commit
            async with _writes_held(backend):
                calls = asyncio.gather(*(write(key, round) for key in keys))
                await asyncio.sleep(0.3)
            await calls
            if refused["bystander"]:
                break
    assert refused["victim"] and refused["bystander"], refused
    url_parts = ["sqlite", "postgresql", "127.0.0.1", "objects.db", backend.schema or "////"]
    for who, errors in refused.items():
        for error in errors:
            text = str(error)
            assert error["type"] == "storage_unavailable"
            assert SECRET not in text and "injected" not in text, text
            assert (VICTIM not in text) if who == "bystander" else True, text
            for internal in ("[SQL", "INSERT", "UPDATE", "objects_checkpoints", "parameters",
                             *url_parts):
                assert internal not in text, (internal, text)
            error_id = re.search(r"error ([0-9a-f]{16})", error["message"])
            assert error_id is not None, text
            logged = [r.getMessage() for r in caplog.records
                      if f"error {error_id[1]} (storage_unavailable)" in r.getMessage()]
            assert len(logged) == 1 and "injected fault" in logged[0], logged


async def test_engines_never_show_a_statements_parameters(tmp_path: Any) -> None:
    from fastapi_objects.storage import create_engine
    from fastapi_objects.storage.sql import SQLStorage

    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    assert create_engine(url).sync_engine.hide_parameters
    storage = SQLStorage(url)
    try:
        assert storage.engine.sync_engine.hide_parameters
        await storage.create_tables()
        assert storage._writer is not None
        conn = await storage._writer.run(lambda conn: conn)  # the writer's own engine
        assert conn.engine.hide_parameters
    finally:
        await storage.close()


def test_a_connection_that_finds_a_new_file_locked_switches_it_to_wal_once_free(
    tmp_path: Path,
) -> None:
    """Connections opening one new SQLite file together race for the lock that switches it to
    WAL, and SQLite answers the losers "database is locked" at once: they try again."""
    import threading

    from fastapi_objects.storage._sqlite import set_pragmas

    path = str(tmp_path / "new.db")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another process, in the middle of its own switch
    loser = sqlite3.connect(path, timeout=0, isolation_level=None)  # no busy handler at all
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        loser.execute("PRAGMA journal_mode=WAL")  # what one try gets
    threading.Timer(0.2, lambda: holder.execute("COMMIT")).start()
    set_pragmas(loser.execute)  # tries again until the lock is free
    assert loser.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert loser.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    loser.close()
    holder.close()
