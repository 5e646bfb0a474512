"""Shared fixtures: real SQLite files and a real PostgreSQL server, one isolated schema per test."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fastapi_objects.storage import Storage

PG_URL = os.environ.get(
    "OBJECTS_TEST_DATABASE_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test"
)
REQUIRE_PG = os.environ.get("OBJECTS_REQUIRE_POSTGRES") == "1"
BACKENDS = ["memory", "sqlite", "postgres"]


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _probe(url: str) -> str | None:
    try:
        import asyncpg

        conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=3)
        await conn.close()
    except Exception as exc:
        return f"PostgreSQL at {url} is not reachable ({exc!r}); set OBJECTS_TEST_DATABASE_URL"
    return None


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL URL; skips (or fails under OBJECTS_REQUIRE_POSTGRES=1) when unreachable."""
    # A thread of its own: this may be first requested from inside a running event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reason = pool.submit(asyncio.run, _probe(PG_URL)).result()
    if reason is not None:
        if REQUIRE_PG:
            pytest.fail(reason + " and OBJECTS_REQUIRE_POSTGRES=1")
        pytest.skip(reason)
    return PG_URL


async def _exec(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def pg_schema(pg_url: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL schema for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    await _exec(pg_url, f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        await _exec(pg_url, f'DROP SCHEMA "{name}" CASCADE')


class Backend:
    """Where a test's storage lives: a URL and an optional schema."""

    def __init__(self, name: str, url: str, schema: str | None = None) -> None:
        self.name = name
        self.url = url
        self.schema = schema

    def __repr__(self) -> str:
        return f"Backend({self.name})"


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each backend family in turn: memory, a SQLite file, a PostgreSQL schema."""
    if request.param == "memory":
        yield Backend("memory", "memory://")
    elif request.param == "sqlite":
        yield Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'objects.db'}")
    else:
        url = request.getfixturevalue("pg_url")
        name = f"t_{uuid.uuid4().hex[:12]}"
        await _exec(url, f'CREATE SCHEMA "{name}"')
        try:
            yield Backend("postgres", url, name)
        finally:
            await _exec(url, f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture
async def storage(backend: Backend) -> AsyncIterator[Storage]:
    """An open storage with its tables, on each backend family in turn."""
    from fastapi_objects.storage import open_storage

    store = open_storage(backend.url, schema=backend.schema)
    await store.start()
    await store.create_tables()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def sql_backend(backend: Backend) -> Iterator[Backend]:
    """Only the durable backends (SQLite and PostgreSQL)."""
    if backend.name == "memory":
        pytest.skip("needs a durable backend")
    yield backend


@pytest.fixture
async def durable(backend: Backend) -> AsyncIterator[Backend]:
    """A durable backend (SQLite, PostgreSQL) with its tables, for nodes that share it."""
    from fastapi_objects.storage import open_storage

    if backend.name == "memory":
        pytest.skip("nodes share a durable database")
    storage = open_storage(backend.url, schema=backend.schema)
    await storage.create_tables()
    await storage.close()
    yield backend


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A fresh SQLite file for one test."""
    return f"sqlite+aiosqlite:///{tmp_path / 'objects.db'}"


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    """The shared test app of tests/_apps.py, started, on a fresh SQLite file."""
    from tests._apps import make_app

    app, _ = make_app(db_url)
    with TestClient(app) as client:
        yield client
