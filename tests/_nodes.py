"""Real uvicorn processes serving the example app, each one node, on loopback ports.

Example::

    async with Cluster(env, names=["n1", "n2", "n3"], ttl=2.0) as cluster:
        await cluster.post("n2", "/counters/a/increment")
        cluster.kill("n1")              # SIGKILL
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx2

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """One uvicorn process: its name (node id), port and process."""

    def __init__(self, name: str, port: int, env: dict[str, str]) -> None:
        self.name = name
        self.port = port
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        # A file, not a pipe: a pipe nobody reads would block a node that logs a lot.
        self._log = tempfile.NamedTemporaryFile(prefix=f"node-{name}-", suffix=".log")  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "uvicorn", "example_app.main:app", "--port", str(self.port),
            "--log-level", "warning", "--timeout-graceful-shutdown", "10",
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=self._log,
        )
        async with httpx2.AsyncClient() as client, asyncio.timeout(60):
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited: {self.stderr()}")
                try:
                    if (await client.get(self.url + "/healthz")).status_code == 200:
                        return
                except httpx2.TransportError:
                    pass
                await asyncio.sleep(0.05)

    def close(self) -> None:
        """Remove the log file."""
        self._log.close()

    def stderr(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    async def stop(self) -> None:
        """SIGTERM (graceful) and wait; SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class Cluster:
    """Several nodes sharing one database (``env`` names it)."""

    def __init__(self, env: dict[str, str], names: list[str], ttl: float = 10.0) -> None:
        self.nodes: dict[str, Node] = {}
        for name in names:
            node_env = dict(env, OBJECTS_NODE_ID=name, OBJECTS_NODE_TTL=str(ttl),
                            OBJECTS_MACHINE=f"m-{name}")
            self.nodes[name] = Node(name, free_port(), node_env)
        self.http = httpx2.AsyncClient(
            timeout=60, limits=httpx2.Limits(max_keepalive_connections=0)
        )

    async def __aenter__(self) -> Self:
        await asyncio.gather(*(node.start() for node in self.nodes.values()))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.http.aclose()
        await asyncio.gather(*(node.stop() for node in self.nodes.values()))
        for node in self.nodes.values():
            node.close()

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    async def post(self, name: str, path: str, **kwargs: Any) -> httpx2.Response:
        return await self.http.post(self.nodes[name].url + path, **kwargs)

    async def get(self, name: str, path: str, **kwargs: Any) -> httpx2.Response:
        return await self.http.get(self.nodes[name].url + path, **kwargs)

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.stderr()[-2000:]}" for n in self.nodes.values())
