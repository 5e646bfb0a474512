"""The ``objects`` command starts quickly: it imports only what the command at hand needs.

Seen: ``objects --help`` and ``objects ls`` took 1.3-2 s, mostly importing FastAPI, SQLAlchemy,
Alembic and pydantic that the command never used. What ``--help`` imports is read with
``python -X importtime``, and checked by name: which packages load decides the start-up time,
and unlike a time budget (which failed on a busy 2-core machine) it does not move with load.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

from fastapi_objects.runtime import DurableObject, Runtime

WEB = ("fastapi", "starlette")
# Outside the standard library, --help may load the CLI toolkit (Typer, Click, Rich and what
# Rich renders help with) and the interpreter's own start-up hooks; nothing else.
HELP_PACKAGES = {
    "fastapi_objects", "typer", "click", "rich", "markdown_it", "mdurl", "linkify_it", "pygments",
    "shellingham", "annotated_doc", "typing_extensions", "colorama", "attr",
    "_distutils_hack", "sitecustomize", "usercustomize", "org",
}
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


def test_help_imports_only_the_cli_toolkit(tmp_path: Path) -> None:
    done, lines = _importtime("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "objects [OPTIONS] COMMAND" in done.stdout
    loaded = _loaded(lines)
    for package in HEAVY:
        assert not _top_package(loaded, package), f"--help imported {package}"
    tops = {name.split(".")[0] for name in loaded} - set(sys.stdlib_module_names)
    assert tops <= HELP_PACKAGES, f"--help imported {sorted(tops - HELP_PACKAGES)}"


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
