"""A PostgreSQL server of a test's own: a fresh cluster in a temp folder, removed afterwards.

For tests that must stop and start PostgreSQL: the server behind ``OBJECTS_TEST_DATABASE_URL``
belongs to whoever runs the tests (and to their other test runs), so it is never touched.

Example::

    server = OwnPostgres.find()           # a str saying why when this machine cannot
    await server.create()
    await server.stop(); await server.start()
    await server.remove()

The machine's binaries (``initdb``, ``pg_ctl``) run as the current user, or, as root (which
PostgreSQL refuses), as the ``postgres`` user through ``runuser``. The port is free and below
the kernel's ephemeral range, so no ``bind(("", 0))`` of another test can take it while the
server is stopped.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

_SEARCH = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/opt/homebrew/opt/postgresql@*/bin")


def _binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else the newest version found."""
    initdb = shutil.which("initdb")
    if initdb is not None and shutil.which("pg_ctl") is not None:
        return Path(initdb).resolve().parent
    found = [p for pattern in _SEARCH for p in Path("/").glob(pattern.lstrip("/"))]
    found = [p for p in found if (p / "initdb").is_file() and (p / "pg_ctl").is_file()]
    return max(found, key=_version) if found else None


def _version(bindir: Path) -> tuple[int, ...]:
    """``(15,)`` for ``/usr/lib/postgresql/15/bin``, ``(16,)`` for ``/usr/pgsql-16/bin``."""
    digits = "".join(c if c.isdigit() else " " for c in bindir.parent.name).split()
    return tuple(int(d) for d in digits)


def _free_port() -> int:
    """A port nobody listens on, outside the range the kernel hands out for port 0."""
    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        port = random.randint(max(1024, low // 2), low - 1)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class OwnPostgres:
    """One throwaway PostgreSQL cluster on 127.0.0.1, trust authentication."""

    def __init__(self, bindir: Path, runas: list[str]) -> None:
        self.bindir = bindir
        self._runas = runas  # [] or ["runuser", "-u", "postgres", "--"]
        self.root = Path(tempfile.mkdtemp(prefix="objects-pg-"))
        self.data = self.root / "data"
        self.port = 0

    @classmethod
    def find(cls) -> OwnPostgres | str:
        """A server to create, or why this machine cannot run one (for the skip message)."""
        bindir = _binaries()
        if bindir is None:
            return "no PostgreSQL binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql"
        runas: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL will not run as root
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root, and no postgres user to run PostgreSQL as"
            if shutil.which("runuser") is None:
                return "running as root, and no runuser to run PostgreSQL as postgres"
            runas = ["runuser", "-u", "postgres", "--"]
        return cls(bindir, runas)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of its ``postgres`` database."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    async def _run(self, *args: str) -> None:
        argv = [*self._runas, str(self.bindir / args[0]), *args[1:]]
        done = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}{tail}")

    async def create(self) -> None:
        """``initdb`` a new cluster and start it on a free port (another one if that is taken)."""
        if self._runas:
            shutil.chown(self.root, user="postgres")
        await self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                        "--encoding=UTF8", "--locale=C", "--no-sync")
        for attempt in range(3):
            self.port = _free_port()
            with (self.data / "postgresql.conf").open("a") as conf:  # start reads it every time
                conf.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                           f"unix_socket_directories = '{self.root}'\nmax_connections = 50\n")
            try:
                await self.start()
                return
            except RuntimeError:  # the port was taken meanwhile: the next one
                if attempt == 2:
                    raise

    async def stop(self) -> None:
        """Stop as an operator restarting it would: ``fast`` ends every session at once."""
        await self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    async def start(self) -> None:
        """Start it again, on the same port, with the same data."""
        await self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                        "-w", "start")

    async def remove(self) -> None:
        """Stop it (if it runs) and delete its folder."""
        if (self.data / "postmaster.pid").exists():
            await self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
