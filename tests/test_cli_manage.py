"""`objects ls/show/rm/stats/migrate` on real SQLite and PostgreSQL, and how every command fails.

A user error must be ONE line on stderr (``error: ...``) and exit code 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from fastapi_objects import Objects
from fastapi_objects.cli import app as cli
from fastapi_objects.cli import manage
from fastapi_objects.storage.base import STATUSES

HOUR = timedelta(hours=1)

SHOP = '''\
import os
from datetime import timedelta

from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_objects import DurableObject, Objects


class CounterState(BaseModel):
    value: int = 0


class Counter(DurableObject[CounterState]):
    async def increment(self, by: int = 1) -> int:
        self.state.value += by
        self.record("incremented", {"by": by})
        return self.state.value


class CartState(BaseModel):
    items: list[str] = []


class Visit(DurableObject[CartState]):
    expire_after = timedelta(hours=1)

    async def see(self, page: str) -> int:
        self.state.items.append(page)
        return len(self.state.items)


class Cart(DurableObject[CartState]):
    async def add(self, item: str) -> int:
        self.state.items.append(item)
        return len(self.state.items)


objects = Objects(objects=[Counter, Cart], schema=os.environ.get("OBJECTS_SCHEMA"))
app = FastAPI(lifespan=objects.lifespan)
'''


def app_module(name: str, source: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Module ``name`` in ``folder``, the current folder, importable; no database variable set."""
    (folder / f"{name}.py").write_text(source)
    monkeypatch.chdir(folder)
    for variable in ("OBJECTS_DATABASE_URL", "OBJECTS_SCHEMA", "DATABASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(sys, "path", [str(folder), *sys.path])
    sys.modules.pop(name, None)


def migrated(
    request: pytest.FixtureRequest, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str | None, list[str]]:
    """A migrated SQLite file or PostgreSQL schema (``request.param``), in the environment.

    Returns its URL, its schema and the CLI options that name it.
    """
    if request.param == "sqlite":
        url, schema = f"sqlite+aiosqlite:///{folder / 'objects.db'}", None
    else:
        url, schema = request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema")
    monkeypatch.setenv("OBJECTS_DATABASE_URL", url)
    options = ["--database-url", url]
    if schema:
        monkeypatch.setenv("OBJECTS_SCHEMA", schema)
        options += ["--schema", schema]
    assert "ready" in run("migrate", *options)
    return url, schema, options


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An app module ``shop`` in the current folder (its runtime reads OBJECTS_DATABASE_URL)."""
    app_module("shop", SHOP, tmp_path, monkeypatch)
    yield tmp_path
    sys.modules.pop("shop", None)


@pytest.fixture(params=["sqlite", "postgres"])
def stored(
    shop: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Counters committed by a real runtime on a SQLite file or in a PostgreSQL schema.

    The database is also in OBJECTS_DATABASE_URL (for ``shop``'s runtime, as an app reads it);
    returns the CLI options that name it.
    """
    url, schema, options = migrated(request, shop, monkeypatch)

    async def populate() -> None:
        counter = importlib.import_module("shop").Counter

        async with Objects(objects=[counter], database_url=url, schema=schema) as objects:
            for key, by in [("a", 1), ("a", 2), ("a", 3), ("b", 5), ("user:1", 7)]:
                await objects.get(counter, key).increment(by)

    asyncio.run(populate())
    return options


def run(*args: str, input: str | None = None) -> str:
    result = CliRunner().invoke(cli, list(args), input=input)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def fails(*args: str, input: str | None = None) -> str:
    """Run a command that must fail with one line on stderr; return that line."""
    result = CliRunner().invoke(cli, list(args), input=input)
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def cells(output: str, first: str) -> list[str]:
    """The cells of the table row starting with ``first``."""
    for line in output.splitlines():
        row = [c.strip() for c in line.strip("│┃ ").split("│")]
        if row[0] == first:
            return row
    raise AssertionError(f"no row {first!r} in:\n{output}")


def test_ls_filters_and_limits(stored: list[str]) -> None:
    out = run("ls", "counter", *stored)
    assert cells(out, "a")[:5] == ["a", "hibernated", "-", "3", "1"]  # "-": no owner now
    assert cells(out, "a")[-1] == '{"value":6}'
    assert cells(out, "user:1")[-1] == '{"value":7}'
    only = run("ls", "counter", "--prefix", "user:", *stored)
    assert "user:1" in only and cells(only, "user:1") and "│ a " not in only
    assert "no counter objects match" in run("ls", "counter", "--status", "active", *stored)
    assert "b" in run("ls", "counter", "--status", "hibernated", *stored)
    limited = run("ls", "counter", "--limit", "2", *stored)
    assert "raise --limit" in limited and "user:1" not in limited


def test_ls_without_a_type_lists_the_types_with_their_counts(stored: list[str]) -> None:
    out = run("ls", *stored)
    assert cells(out, "counter")[1:] == ["0", "3", "3"]
    assert "objects ls TYPE lists the objects of one type" in out
    assert "--status and --prefix filter" in fails("ls", "--prefix", "user:", *stored)


def test_ls_without_a_type_on_an_empty_database(shop: Path) -> None:
    url = f"sqlite:///{shop / 'empty.db'}"
    run("migrate", "--database-url", url)
    assert "no stored objects" in run("ls", "--database-url", url)


def test_the_commands_read_database_url_when_objects_database_url_is_unset(
    stored: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = stored[1]  # `fly postgres attach` sets DATABASE_URL, and fly ssh console has it
    monkeypatch.delenv("OBJECTS_DATABASE_URL")
    monkeypatch.setenv("DATABASE_URL", url)
    out = run("ls", "counter", *stored[2:])
    assert "(DATABASE_URL in the environment)" in out.splitlines()[0]
    assert cells(out, "a")[-1] == '{"value":6}'


def test_show_state_and_journal_tail(stored: list[str]) -> None:
    out = run("show", "counter", "a", *stored)
    fields = {line.split("  ")[0]: line.split()[-1] for line in out.splitlines() if "  " in line}
    assert fields["status"] == "hibernated" and fields["rev"] == "3"
    assert fields["owner"] == "-"  # the runtime that wrote it stopped and released it
    assert fields["state version"] == "1" and fields["journal rev"] == "3"
    assert '"value": 6' in out
    assert [cells(out, r)[2] for r in ("1", "2", "3")] == ["incremented"] * 3
    tail = run("show", "counter", "a", "--journal", "1", *stored)
    assert cells(tail, "3")[3] == '{"by":3}'
    with pytest.raises(AssertionError):
        cells(tail, "2")


def test_ls_and_show_say_when_an_expiring_object_expires(stored: list[str]) -> None:
    async def populate() -> None:
        visit = importlib.import_module("shop").Visit
        async with Objects(objects=[visit]) as objects:  # the database of OBJECTS_* (stored)
            await objects.get(visit, "v1").see("home")

    before = datetime.now(UTC).replace(microsecond=0)
    asyncio.run(populate())
    after = datetime.now(UTC)
    out = run("ls", "visit", *stored)
    assert "┃ updated (UTC)       ┃ expires (UTC)       ┃ state" in out

    def parse(text: str) -> datetime:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)

    assert before + HOUR <= parse(cells(out, "v1")[6]) <= after + HOUR
    show = run("show", "visit", "v1", *stored)
    line = next(line for line in show.splitlines() if line.startswith("expires (UTC)"))
    assert parse(line.removeprefix("expires (UTC)").strip()) == parse(cells(out, "v1")[6])
    assert "objects:expire" not in show and "alarms" not in show  # not one of its alarms
    assert "expires" not in run("ls", "counter", *stored)  # counters never expire


def test_rm_asks_then_purges(stored: list[str]) -> None:
    refused = CliRunner().invoke(cli, ["rm", "counter", "b", *stored], input="n\n")
    assert refused.exit_code == 1 and "Delete counter:b (rev 1)" in refused.output
    assert "b" in run("show", "counter", "b", *stored)
    assert "deleted counter:b" in run("rm", "counter", "b", *stored, input="y\n")
    assert fails("show", "counter", "b", *stored) == "error: no object counter:b"
    assert "deleted counter:a" in run("rm", "counter", "a", "--yes", *stored)
    assert fails("rm", "counter", "a", "--yes", *stored) == "error: no object counter:a"
    assert cells(run("stats", *stored), "counter")[1:] == ["0", "1", "1"]


def test_stats_and_app_option(stored: list[str]) -> None:
    out = run("stats", "--app", "shop:app")  # the runtime found in the FastAPI app's module
    assert cells(out, "counter")[1:] == ["0", "3", "3"]
    assert cells(out, "cart")[1:] == ["0", "0", "0"]  # registered, none stored
    assert "user:1" in run("ls", "counter", "--app", "shop:objects")
    assert "no cart objects match" in run("ls", "cart", "--app", "shop:objects")
    assert fails("ls", "nope", "--app", "shop:app") == (
        "error: unknown object type 'nope' (registered: cart, counter)"
    )
    assert "registered: cart, counter" in fails("show", "nope", "a", "--app", "shop:app")
    # Without --app, the types known are the stored ones.
    assert "none stored (stored types: counter" in fails("ls", "cart", *stored)
    assert "unknown object type 'nope'" in fails("show", "nope", "a", *stored)


def test_unreachable_database(shop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = "postgresql+asyncpg://root@127.0.0.1:1/test"
    commands = (["ls", "counter"], ["show", "counter", "a"], ["stats"], ["nodes"], ["migrate"])
    for command in commands:
        line = fails(*command, "--database-url", dead)
        assert "unreachable" in line or "unavailable" in line
        assert "Connect call failed ('127.0.0.1', 1)" in line
    monkeypatch.setenv("OBJECTS_DATABASE_URL", dead)  # read from the environment too
    assert "database unreachable: [Errno 111]" in fails("stats")


def test_malformed_urls_and_options(shop: Path) -> None:
    assert "malformed database URL 'nope'" in fails("ls", "counter", "--database-url", "nope")
    assert "unsupported database URL scheme 'mysql'" in fails(
        "stats", "--database-url", "mysql://u@h/db"
    )
    line = fails("stats", "--database-url", "postgresql+asyncpg://u:secret@h:port/db")
    assert "malformed database URL 'postgresql+asyncpg://u:***@h:port/db'" in line
    assert "inside your app's process" in fails("stats", "--database-url", "memory://")
    assert "module:attr" in fails("stats", "--app", "shop")
    assert "cannot import nosuch" in fails("stats", "--app", "nosuch:app")
    assert "has no attribute 'nothing'" in fails("stats", "--app", "shop:nothing")
    assert "unknown status 'awake'" in fails("ls", "counter", "--status", "awake")
    assert "has characters outside" in fails("show", "counter", "bad key")
    assert "object key" in fails("rm", "counter", "x" * 300, "--yes")
    (shop / ".env").write_text("OBJECTS_DATABASE_URL=sqlite+aiosqlite//objects.db\n")
    assert "malformed database URL" in fails("stats")  # .env is read too


def test_missing_database_or_tables(shop: Path) -> None:
    missing = shop / "missing.db"
    out = fails("ls", "counter", "--database-url", f"sqlite:///{missing}")
    assert "no database file" in out and "objects migrate" in out
    assert not missing.exists()  # looking did not create it
    empty = shop / "empty.db"
    empty.write_bytes(b"")
    out = fails("stats", "--database-url", f"sqlite:///{empty}")
    assert "no storage tables" in out and "objects migrate" in out


def test_init_refuses_a_folder_that_is_not_a_fastapi_project(shop: Path) -> None:
    (shop / "shop.py").unlink()
    (shop / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["flask"]\n')
    assert "is not a FastAPI project root" in fails("init")
    assert "--schema needs --database postgres" in fails("init", "--schema", "s")
    # The real console script: one line, exit code 1, no traceback.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJECTS_")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "objects"), "init"], cwd=shop, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "is not a FastAPI project root" in done.stderr
    assert not (shop / ".env").exists() and not (shop / "alembic.ini").exists()


def test_every_command_names_its_database_with_the_password_hidden(
    shop: Path, pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen: `objects migrate` quietly upgraded ./objects.db when the user meant PostgreSQL.
    url = make_url(pg_url).set(password="hunter2").render_as_string(hide_password=False)
    shown = make_url(url).render_as_string(hide_password=True)
    monkeypatch.setenv("OBJECTS_DATABASE_URL", url)
    monkeypatch.setenv("OBJECTS_SCHEMA", pg_schema)
    commands = [
        ["migrate"], ["stats"], ["ls", "counter", "--app", "shop:app"],
        ["show", "counter", "a", "--app", "shop:app"], ["rm", "counter", "a", "--yes"],
        ["nodes"],
    ]
    for command in commands:
        result = CliRunner().invoke(cli, command)
        first = result.stdout.splitlines()[0]
        assert "hunter2" not in result.output
        source = "the runtime of --app shop:app" if "--app" in command else (
            "OBJECTS_DATABASE_URL in the environment"
        )
        assert first == f"database: {shown}, schema {pg_schema} ({source})", (command, first)
    monkeypatch.delenv("OBJECTS_DATABASE_URL")
    monkeypatch.delenv("OBJECTS_SCHEMA")
    (shop / ".env").write_text(f"OBJECTS_DATABASE_URL={url}\nOBJECTS_SCHEMA={pg_schema}\n")
    assert run("stats").splitlines()[0] == (
        f"database: {shown}, schema {pg_schema} (OBJECTS_DATABASE_URL in .env)"
    )
    assert run("stats", "--database-url", url, "--schema", pg_schema).splitlines()[0] == (
        f"database: {shown}, schema {pg_schema} (--database-url)"
    )
    (shop / ".env").unlink()
    assert run("migrate").splitlines()[0] == (
        "database: sqlite+aiosqlite:///./objects.db "
        "(the default; set OBJECTS_DATABASE_URL to change it)"
    )


def test_the_statuses_in_the_help_are_the_storage_ones() -> None:
    assert manage.STATUSES == STATUSES
