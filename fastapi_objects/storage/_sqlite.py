"""SQLite's connections: one writer and one reader, each a ``sqlite3`` connection in a thread.

A durable call used to cost one aiosqlite thread hop per statement, through SQLAlchemy's async
engine, with several of the runtime's own connections taking turns at SQLite's write lock (its
busy handler sleeps up to 100 ms at a time). Now every write of this process goes through ONE
connection, in ONE thread hop per unit of work (a whole group commit, a whole thaw batch),
in a ``BEGIN IMMEDIATE`` transaction: in-process writers never wait on each other's lock, and
readers, on a connection of their own, never take it (WAL).

A unit of work is a plain function of a synchronous SQLAlchemy ``Connection`` (the same
functions run on PostgreSQL through ``AsyncConnection.run_sync``); the hot ones also use the
driver's cursor (``connection.connection.driver_connection``) for fixed statements.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pydantic_core
import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

R = TypeVar("R")


_Job = tuple[Callable[..., Any], tuple[Any, ...], bool, asyncio.AbstractEventLoop,
             "asyncio.Future[Any]"]


def _succeed(done: asyncio.Future[Any], result: Any) -> None:
    if not done.done():  # the caller may have been cancelled
        done.set_result(result)


def _fail(done: asyncio.Future[Any], exc: BaseException) -> None:
    if not done.done():
        done.set_exception(exc)


def _dumps(value: object) -> str:
    return pydantic_core.to_json(value).decode()


def set_pragmas(execute: Callable[[str], object], within: float = 30.0) -> None:
    """WAL and ``synchronous=FULL`` on a new connection (``execute`` runs one statement).

    WAL lets readers run beside the writer; ``synchronous=FULL`` makes every acknowledged
    commit survive a power loss, not only a process crash. Switching a new file to WAL takes
    an exclusive lock, and SQLite answers a connection that races another one for it
    "database is locked" at once (it skips its busy handler where waiting could deadlock):
    connections opening one new file together (``uvicorn --workers N``) try again for up to
    ``within`` seconds. Once one has switched, the mode is in the file.
    """
    deadline = time.monotonic() + within
    delay = 0.001
    while True:
        try:
            execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            # (The writer's and reader's own threads; SQLAlchemy's connect hook, which the
            # CLI and migrations use, blocks its caller: only while a new file is switched.)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    execute("PRAGMA synchronous=FULL")


def open_sqlite(path: str) -> sqlite3.Connection:
    """A connection as the storage sets them up: WAL, ``synchronous=FULL``, autocommit mode."""
    raw = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    set_pragmas(raw.execute)
    return raw


class SQLiteWorker:
    """One SQLite connection and the one thread that uses it.

    ``run(fn, *args)`` calls ``fn(connection, *args)`` in the thread; with ``write=True`` the
    call is one ``BEGIN IMMEDIATE`` transaction, committed when ``fn`` returns and rolled back
    when it raises. The connection opens on first use (the CLI never starts the storage).
    """

    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self.name = f"objects-sqlite-{name}"
        # A thread of its own fed by a SimpleQueue: a ThreadPoolExecutor's submit (locks, a
        # semaphore, a concurrent future chained to an asyncio one) was a tenth of the
        # process's samples under a busy loop, once per batch.
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._raw: sqlite3.Connection | None = None
        self._conn: sa.Connection | None = None

    def _open(self) -> sa.Connection:
        raw = self._raw = open_sqlite(self.path)
        engine = sa.create_engine(
            "sqlite://", creator=lambda: raw, poolclass=StaticPool, hide_parameters=True,
            json_serializer=_dumps, json_deserializer=pydantic_core.from_json,
        )
        self._conn = engine.connect()
        return self._conn

    async def run(self, fn: Callable[..., R], *args: Any, write: bool = False) -> R:
        """Run ``fn(connection, *args)`` in this worker's thread (``write``: as a transaction)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        if self._thread is None:
            # A daemon: a CLI command that never closes its storage must still exit.
            self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
            self._thread.start()
        self._jobs.put((fn, args, write, loop, done))
        return await done

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, write, loop, done = job
            try:
                result = self._call(fn, args, write)
            except BaseException as exc:
                loop.call_soon_threadsafe(_fail, done, exc)
            else:
                loop.call_soon_threadsafe(_succeed, done, result)
        self._close()  # the last job: the connection closes in the thread that used it

    def _call(self, fn: Callable[..., R], args: tuple[Any, ...], write: bool) -> R:
        conn = self._conn if self._conn is not None else self._open()
        raw = self._raw
        assert raw is not None
        if write:
            raw.execute("BEGIN IMMEDIATE")  # the write lock first: every check sees the latest
        try:
            result = fn(conn, *args)
        except BaseException:
            conn.rollback()  # SQLAlchemy's transaction and the driver's (ROLLBACK)
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raise
        conn.commit()  # the driver's COMMIT (fsync), when a transaction is open
        if raw.in_transaction:
            raw.execute("COMMIT")
        return result

    async def close(self) -> None:
        """Close the connection (in its thread) and stop the thread."""
        if self._thread is None:
            return
        self._jobs.put(None)
        thread, self._thread = self._thread, None
        await asyncio.get_running_loop().run_in_executor(None, thread.join)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
