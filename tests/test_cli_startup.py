"""The ``objects`` command starts quickly: it imports only what the command at hand needs.

Seen: ``objects --help`` and ``objects ls`` took 1.3-2 s, mostly importing FastAPI, SQLAlchemy,
Alembic and pydantic that the command never used. Measured with ``python -X importtime``
(the interpreter's own per-module figures), not the wall clock of a busy machine.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

from fastapi_objects.runtime import DurableObject, Runtime

WEB = ("fastapi", "starlette")
HEAVY = ("fastapi", "starlette", "sqlalchemy", "alembic", "pydantic", "jinja2", "asyncpg")


def _importtime(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``python -X importtime -m fastapi_objects.cli ARGS``; its lines of import figures."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fastapi_objects.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    return done, lines[1:]  # the first is the header


def _loaded(lines: list[str]) -> set[str]:
    return {line.split("|")[2].strip() for line in lines}


def _top_package(names: set[str], package: str) -> bool:
    return any(name == package or name.startswith(package + ".") for name in names)


def _cli_import_us(lines: list[str]) -> int:
    """Microseconds spent importing from ``fastapi_objects`` on: the CLI's own share.

    The top-level entries' cumulative figures (each includes its children), from the first
    ``fastapi_objects`` module on; the interpreter's start-up (site, encodings) comes before.
    """
    total, counting = 0, False
    for line in lines:
        _, cumulative, name = line.split("|")  # "import time: self | cumulative | name"
        top = not name.startswith("  ")  # children are indented under their importer
        if top and name.strip().startswith("fastapi_objects"):
            counting = True
        if counting and top:
            total += int(cumulative)
    return total


def test_help_imports_no_framework_and_stays_under_its_budget(tmp_path: Path) -> None:
    figures = []
    for _ in range(3):  # the best of three: a busy machine slows some runs down
        done, lines = _importtime("--help", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "objects [OPTIONS] COMMAND" in done.stdout
        loaded = _loaded(lines)
        for package in HEAVY:
            assert not _top_package(loaded, package), f"--help imported {package}"
        figures.append(_cli_import_us(lines))
    assert min(figures) < 300_000, f"importing the CLI took {min(figures) / 1000:.0f} ms"


class _State(BaseModel):
    value: int = 0


class Counter(DurableObject[_State]):
    async def increment(self) -> int:
        self.state.value += 1
        return self.state.value


def test_ls_and_nodes_load_no_web_framework(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'objects.db'}"

    async def store() -> None:
        async with Runtime(objects=[Counter], database_url=url) as runtime:
            await runtime.get(Counter, "a").increment()

    asyncio.run(store())
    for command, shown in [(["ls", "counter"], '{"value":1}'), (["nodes"], "no nodes")]:
        done, lines = _importtime(*command, "--database-url", url, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert shown in done.stdout  # it really read the database
        loaded = _loaded(lines)
        assert _top_package(loaded, "sqlalchemy")  # the figures do cover the whole command
        for package in WEB:
            assert not _top_package(loaded, package), f"objects {command[0]} imported {package}"
