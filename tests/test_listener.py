"""The internal listener (cluster/listener.py, cluster/_uvicorn.py) in the app's process.

It must leave the app's logging as it found it (uvicorn's ``access_log=False`` once emptied
the app's ``uvicorn.access`` logger: no access line was printed), and it must not let anyone
hold its connections open: half a request, or nothing at all, is cut off after the handshake
deadline, and past ``max_pending`` such connections a new one is refused at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from fastapi_objects import Runtime
from fastapi_objects.cluster import Forwarder, Listener, Signer
from tests._apps import Counter
from tests._nodes import free_port

SECRET = b"s"


LoggingState = tuple[dict[str, tuple[Any, ...]], dict[str, int]]


def _logging_state() -> LoggingState:
    """Every logger's handlers, level, propagation, filters and switch; the level names."""
    loggers: dict[str, logging.Logger] = {"": logging.getLogger()}
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            loggers[name] = logger
    state = {
        name: (tuple(lg.handlers), lg.level, lg.propagate, lg.disabled, tuple(lg.filters))
        for name, lg in loggers.items()
    }
    return state, logging.getLevelNamesMapping()


@pytest.fixture
def app_access_logger() -> Iterator[logging.Logger]:
    """``uvicorn.access`` set up as uvicorn's default log config sets it, restored after."""
    access = logging.getLogger("uvicorn.access")
    saved = (list(access.handlers), access.level, access.propagate)
    access.handlers[:] = [logging.StreamHandler(sys.stdout)]
    access.setLevel(logging.INFO)
    access.propagate = False
    yield access
    access.handlers[:], level, access.propagate = saved
    access.setLevel(level)


async def test_a_node_changes_no_logging_state(
    tmp_path: Path, app_access_logger: logging.Logger
) -> None:
    before_loggers, before_levels = _logging_state()
    runtime = Runtime(objects=[Counter], database_url=f"sqlite:///{tmp_path / 'x.db'}")
    async with runtime:
        assert runtime._host.routing.listener is not None  # the internal listener is serving
        await runtime.get(Counter, "a").increment(1)
    after_loggers, after_levels = _logging_state()
    assert after_levels == before_levels
    for name, state in before_loggers.items():
        assert after_loggers[name] == state, name
    untouched = ((), logging.NOTSET, True, False, ())
    for name in after_loggers.keys() - before_loggers.keys():  # created meanwhile: as created
        assert after_loggers[name] == untouched, name
    assert app_access_logger.handlers and app_access_logger.level == logging.INFO


APP = '''\
from fastapi import FastAPI
from fastapi_objects import Objects

objects = Objects()
app = FastAPI(lifespan=objects.lifespan)


@app.get("/ping")
async def ping() -> dict[str, bool]:
    return {"ok": True}
'''


async def test_uvicorn_prints_access_lines_and_the_start_line_gives_the_pid(
    tmp_path: Path,
) -> None:
    (tmp_path / "main.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJECTS_")}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'app.db'}"  # as a host sets it
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uvicorn", "main:app", "--port", str(port),  # uvicorn's logging
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            async with asyncio.timeout(60):
                while True:
                    try:
                        if (await http.get("/ping")).status_code == 200:
                            break
                    except httpx2.TransportError:
                        await asyncio.sleep(0.05)
            for _ in range(5):
                assert (await http.get("/ping")).status_code == 200
    finally:
        server.terminate()
        out, err = await asyncio.wait_for(server.communicate(), 60)
    access = [line for line in out.decode().splitlines() if '"GET /ping HTTP/1.1" 200' in line]
    assert len(access) >= 6, out.decode() + err.decode()
    start = [line for line in err.decode().splitlines() if "fastapi_objects: node" in line]
    assert len(start) == 1, err.decode()
    assert f"(pid {server.pid}, internal http://127.0.0.1:" in start[0]
    assert "storage sqlite+aiosqlite:///" in start[0]
    assert "(DATABASE_URL in the environment)" in start[0]


class _Echo:
    async def __call__(self, type: str, key: str, method: str, args: dict[str, Any]) -> Any:
        return key


async def _closed_by_peer(reader: asyncio.StreamReader) -> bytes:
    """Everything the peer sent until it closed the connection (a reset counts as closed)."""
    data = b""
    try:
        while chunk := await reader.read(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


async def test_half_sent_requests_cannot_hold_the_listeners_connections() -> None:
    listener = Listener(
        "127.0.0.1", 0, Signer(SECRET, "owner"), _Echo(), handshake_timeout=1.0, max_pending=4
    )
    address = await listener.start()
    port = int(address.rsplit(":", 1)[1])
    forwarder = Forwarder(Signer(SECRET, "caller"), timeout=10)
    writers: list[asyncio.StreamWriter] = []
    try:
        # A peer's channel, open before the flood: signed and upgraded, so not pending.
        assert await forwarder.call(address, "owner", "t", "before", "m", {}) == "before"
        held = []
        for partial in [b"", b"GET /objects-internal/channel HTTP/1.1\r\n",
                        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n", b"G"]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(partial)
            held.append(reader)
            writers.append(writer)
        # The backlog is accepted in order: these come after the four above, past the cap.
        refused = []
        for _ in range(40):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            refused.append(reader)
            writers.append(writer)
        for reader in refused:  # answered and closed at once, not held
            reply = await asyncio.wait_for(_closed_by_peer(reader), 30)
            assert reply.startswith(b"HTTP/1.1 503 "), reply
        # The peer's channel still carries calls meanwhile.
        assert await forwarder.call(address, "owner", "t", "during", "m", {}) == "during"
        # Each held connection is cut off by the deadline (1 s here), without a reply.
        for reader in held:
            assert await asyncio.wait_for(_closed_by_peer(reader), 30) == b""
        # Then a new peer's channel is admitted again.
        other = Forwarder(Signer(SECRET, "other"), timeout=10)
        try:
            assert await other.call(address, "owner", "t", "after", "m", {}) == "after"
        finally:
            await other.close()
    finally:
        for writer in writers:
            writer.close()
        await forwarder.close()
        await listener.stop()
