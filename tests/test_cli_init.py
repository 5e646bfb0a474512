"""`objects init` and `objects migrate` on fresh FastAPI projects, with real SQLite and PostgreSQL.

Each test builds a small FastAPI project in tmp_path (pyproject.toml + app/main.py written as
DESIGN section 1 shows), runs the CLI there (in-process with Typer's CliRunner, and as the real
`objects` console script), then proves with `alembic check` that the migration matches the
runtime's tables, and that the app starts and a durable call persists.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from fastapi_objects.cli import app as cli
from fastapi_objects.cli._alembic import render_environment
from fastapi_objects.cli._templates import templates_dir
from fastapi_objects.storage.tables import LATEST_VERSION

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = '[project]\nname = "Shop API"\nversion = "0.1.0"\ndependencies = ["fastapi"]\n'
MAIN = '''\
from typing import Annotated

from fastapi import Depends, FastAPI
from pydantic import BaseModel

from fastapi_objects import DurableObject, Handle, Objects, get_object


class CounterState(BaseModel):
    value: int = 0


class Counter(DurableObject[CounterState]):
    async def increment(self, by: int = 1) -> int:
        self.state.value += by
        self.record("incremented", {"by": by})
        return self.state.value


# As the README writes it: the database comes from the .env `objects init` wrote.
# create_tables=False: the tables must come from the migration.
objects = Objects(objects=[Counter], create_tables=False)
app = FastAPI(lifespan=objects.lifespan)
app.include_router(objects.router)


@app.post("/counters/{key}/increment")
async def increment(counter: Annotated[Handle[Counter], Depends(get_object(Counter))], by: int = 1):
    return {"value": await counter.increment(by)}
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh FastAPI project as the current folder, with the process state restored after."""
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "main.py").write_text(MAIN)
    monkeypatch.chdir(tmp_path)
    for name in ("OBJECTS_DATABASE_URL", "OBJECTS_SCHEMA", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    loggers = {name: (lg.disabled, lg.level) for name, lg in _loggers()}
    root = logging.getLogger()
    root_state = (root.level, list(root.handlers))
    _forget_app_modules()
    yield tmp_path
    _forget_app_modules()
    # Alembic's env.py calls logging.config.fileConfig: undo it for the tests that follow.
    for name, lg in _loggers():
        lg.disabled, level = loggers.get(name, (False, logging.NOTSET))
        lg.setLevel(level)
    root.setLevel(root_state[0])
    root.handlers[:] = root_state[1]


def _loggers() -> list[tuple[str, logging.Logger]]:
    return [
        (name, lg) for name, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    ]


def _forget_app_modules() -> None:
    for name in [m for m in sys.modules if m == "app" or m.startswith("app.")]:
        del sys.modules[name]


def run(*args: str, input: str | None = None, code: int = 0) -> str:
    """Run the CLI in-process; check its exit code; return stdout."""
    result = CliRunner().invoke(cli, list(args), input=input)
    assert result.exit_code == code, (result.output, result.exception)
    return result.stdout


def run_real(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run an installed console script (`objects`, `alembic`) as a real process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJECTS_")}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=60,
    )


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime (ns), to prove a command changed nothing."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def durable_call(key: str, by: int) -> int:
    """Start the app (lifespan and all), make one durable HTTP call, stop it."""
    _forget_app_modules()
    # A fresh module: a fresh runtime on the configured database.
    app = importlib.import_module("app.main").app
    with TestClient(app) as client:
        response = client.post(f"/counters/{key}/increment", params={"by": by})
    assert response.status_code == 200, response.text
    return int(response.json()["value"])


def storage_revision(root: Path, version: int = 1) -> Path:
    (path,) = (root / "migrations" / "versions").glob(f"*_objects_storage_v{version}.py")
    return path


def test_fresh_project_on_sqlite_end_to_end(project: Path) -> None:
    done = run_real("objects", "init", cwd=project)
    assert done.returncode == 0, done.stderr
    for name in (".env", "alembic.ini", "migrations/README", "migrations/env.py",
                 "migrations/script.py.mako"):
        assert f"created: {name}" in done.stdout
        assert (project / name).is_file()
    revision = storage_revision(project)
    assert "create_storage_tables(version=1, schema=None)" in revision.read_text()
    assert "objects migrate" in done.stdout  # the next commands
    assert (project / ".env").read_text().endswith(
        "OBJECTS_DATABASE_URL=sqlite+aiosqlite:///./objects.db\n"
    )

    done = run_real("objects", "migrate", cwd=project)
    assert done.returncode == 0, done.stderr
    head = storage_revision(project, LATEST_VERSION).name.split("_")[0]
    assert f"upgraded to head {head}" in done.stdout
    again = run_real("objects", "migrate", cwd=project)
    assert again.returncode == 0, again.stderr
    assert f"already at head {head}" in again.stdout and "upgraded" not in again.stdout
    check = run_real("alembic", "check", cwd=project)
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout

    assert durable_call("a", 2) == 2
    assert durable_call("a", 3) == 5  # a restarted app thawed the persisted state
    listing = run_real("objects", "ls", "counter", cwd=project)
    assert listing.returncode == 0, listing.stderr
    assert "hibernated" in listing.stdout and '{"value":5}' in listing.stdout

    # alembic check really compares: a database that drifted from the migration fails it.
    with sqlite3.connect(project / "objects.db") as db:
        db.execute("DROP INDEX ix_objects_checkpoints_status")
    assert run_real("alembic", "check", cwd=project).returncode != 0


def test_fresh_project_on_postgres_in_its_own_schema(
    project: Path, pg_url: str, pg_schema: str
) -> None:
    # The project already names its database the way Fly.io and Heroku write it.
    dsn = pg_url.replace("postgresql+asyncpg://", "postgres://")
    (project / ".env").write_text(f"DATABASE_URL={dsn}\n")
    out = run("init", "--database", "postgres", "--schema", pg_schema)
    assert "updated: .env" in out
    env = (project / ".env").read_text()
    assert f"OBJECTS_DATABASE_URL={pg_url}\n" in env and f"OBJECTS_SCHEMA={pg_schema}\n" in env
    assert env.startswith(f"DATABASE_URL={dsn}\n")  # kept as it was
    assert f'schema="{pg_schema}"' in storage_revision(project).read_text()

    out = run("migrate")
    assert "upgraded to head" in out
    config = Config(str(project / "alembic.ini"))
    command.check(config)  # raises AutogenerateDiffsDetected on any difference

    assert durable_call("a", 7) == 7
    assert durable_call("a", 1) == 8
    listing = run("ls", "counter", "--app", "app.main:app")
    assert '{"value":8}' in listing
    stats = [line.split() for line in run("stats").splitlines() if "counter" in line]
    assert [cell for cell in stats[0] if cell != "│"] == ["counter", "0", "1", "1"]
    shown = run("show", "counter", "a")
    assert '"value": 8' in shown and "incremented" in shown

    # Alembic's version table lives in the test's schema too, not in public.
    async def tables() -> set[str]:
        engine = create_async_engine(pg_url)
        try:
            async with engine.connect() as conn:
                return set(
                    await conn.run_sync(lambda c: sa.inspect(c).get_table_names(schema=pg_schema))
                )
        finally:
            await engine.dispose()

    assert {"alembic_version", "objects_checkpoints", "objects_journal"} <= asyncio.run(tables())


def test_rerun_changes_nothing_and_dry_run_writes_nothing(project: Path) -> None:
    before = snapshot(project)
    out = run("init", "--dry-run")
    assert snapshot(project) == before
    assert "+++ b/migrations/env.py" in out and "+++ b/.env" in out
    assert "+    create_storage_tables(version=1, schema=None)" in out
    assert "dry run: nothing was written" in out

    run("init", "--fly")
    written = snapshot(project)
    out = run("init", "--fly")
    assert snapshot(project) == written
    assert "created" not in out and "updated" not in out
    assert "up to date: .env" in out and "up to date: fly.toml" in out
    assert f"up to date: migrations/versions/{storage_revision(project).name}" in out
    out = run("init", "--fly", "--dry-run")
    assert "---" not in out and snapshot(project) == written


def test_a_value_init_refused_to_change_is_reported_with_how_to_apply_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen: re-running init with --database postgres on a SQLite project printed
    # "up to date: .env", and `objects migrate` then quietly upgraded SQLite again.
    run("init", "--fly")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:hunter2@db.internal/shop")
    fly = project / "fly.toml"
    fly.write_text(fly.read_text() + "# mine\n")
    before = snapshot(project)
    out = run("init", "--database", "postgres", "--fly")
    assert snapshot(project) == before
    assert "up to date: .env" not in out
    assert "differs, kept (--force overwrites it): .env\n" in out
    assert (
        "  OBJECTS_DATABASE_URL=sqlite+aiosqlite:///./objects.db stays; "
        "init would write postgresql+asyncpg://u:***@db.internal/shop\n"
    ) in out
    assert "differs, kept (--force overwrites it): fly.toml" in out
    # The database line names what the app and `objects migrate` will really use.
    assert "database: sqlite+aiosqlite:///./objects.db (OBJECTS_DATABASE_URL in .env)" in out
    assert "hunter2" not in out  # the password
    assert "database: sqlite+aiosqlite:///./objects.db" in run("migrate")

    before = snapshot(project)
    out = run("init", "--database", "postgres", "--fly", "--dry-run")
    assert "would be differs, kept (--force overwrites it): .env" in out
    assert snapshot(project) == before

    out = run("init", "--database", "postgres", "--fly", "--force")
    assert "updated: .env" in out and "updated: fly.toml" in out
    assert "OBJECTS_DATABASE_URL=postgresql+asyncpg://u:hunter2@db.internal/shop\n" in (
        project / ".env"
    ).read_text()
    assert "# mine" not in fly.read_text()
    assert (
        "database: postgresql+asyncpg://u:***@db.internal/shop (OBJECTS_DATABASE_URL in .env)"
    ) in out
    assert "up to date: .env" in run("init", "--database", "postgres", "--fly")


def test_missing_values_are_added_beside_the_kept_ones(project: Path) -> None:
    (project / ".env").write_text("OBJECTS_DATABASE_URL=sqlite+aiosqlite:///./mine.db\n")
    out = run("init", "--database-url", "postgres://u@db/shop", "--schema", "shop")
    assert "updated, differing values kept (--force overwrites them): .env" in out
    assert (project / ".env").read_text() == (
        "OBJECTS_DATABASE_URL=sqlite+aiosqlite:///./mine.db\n"
        "# fastapi_objects storage (objects init)\nOBJECTS_SCHEMA=shop\n"
    )
    assert (
        "database: sqlite+aiosqlite:///./mine.db, schema shop (OBJECTS_DATABASE_URL in .env)"
    ) in out


def test_init_says_when_the_environment_overrides_its_env_file(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OBJECTS_DATABASE_URL", "postgresql://u:pw@elsewhere/db")
    out = run("init")
    assert "created: .env" in out
    assert (
        "note: OBJECTS_DATABASE_URL in your environment (postgresql://u:***@elsewhere/db) wins "
        "over .env for the app and for objects migrate"
    ) in out
    assert (
        "database: postgresql://u:***@elsewhere/db (OBJECTS_DATABASE_URL in the environment)"
    ) in out


def test_postgres_without_a_url_writes_nothing_and_says_what_to_set(project: Path) -> None:
    # Seen: a localhost placeholder was written, then `next: objects migrate`, which failed.
    before = snapshot(project)
    result = CliRunner().invoke(cli, ["init", "--database", "postgres"])
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "--database-url postgresql://USER:PASSWORD@HOST:5432/DBNAME" in line
    assert "DATABASE_URL" in line and "nothing was written" in line
    assert snapshot(project) == before


def test_postgres_without_a_url_asks_on_a_terminal(project: Path) -> None:
    import fcntl
    import pty
    import select
    import termios

    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJECTS_")}
    env.pop("DATABASE_URL", None)
    controller, terminal = pty.openpty()

    def own_terminal() -> None:  # as a login shell's: its controlling terminal, /dev/tty
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [str(BIN / "objects"), "init", "--database", "postgres"], cwd=project, env=env,
        stdin=terminal, stdout=terminal, stderr=terminal, preexec_fn=own_terminal,
    )
    os.close(terminal)
    shown = b""

    def read_until(done: bytes) -> None:
        nonlocal shown
        while done not in shown:
            ready, _, _ = select.select([controller], [], [], 60)
            assert ready, shown
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the process closed the terminal
                chunk = b""
            assert chunk, shown
            shown += chunk

    try:
        # Typed once the prompt is whole: its last space is written with echo already off.
        read_until(b"not shown): ")
        os.write(controller, b"postgres://u:hunter2@db.internal:5432/shop\n")
        read_until(b"next:")
        assert process.wait(60) == 0, shown
    finally:
        process.kill()
        process.wait()
        os.close(controller)
    assert "OBJECTS_DATABASE_URL=postgresql+asyncpg://u:hunter2@db.internal:5432/shop\n" in (
        project / ".env"
    ).read_text()
    assert b"hunter2" not in shown  # neither echoed as typed nor printed after
    assert b"database: postgresql+asyncpg://u:***@db.internal:5432/shop" in shown


def test_database_url_option(project: Path) -> None:
    out = run("init", "--database-url", "postgres://u:hunter2@db.internal/shop")  # postgres
    assert "OBJECTS_DATABASE_URL=postgresql+asyncpg://u:hunter2@db.internal/shop\n" in (
        project / ".env"
    ).read_text()
    assert "hunter2" not in out and "database: postgresql+asyncpg://u:***@db.internal/shop" in out
    assert "objects migrate" in out
    line = CliRunner().invoke(cli, ["init", "--database", "sqlite", "--database-url",
                                    "postgres://u:pw@db/shop"]).stderr
    assert "is not SQLite" in line
    line = CliRunner().invoke(cli, ["init", "--database", "postgres", "--database-url",
                                    "sqlite:///x.db"]).stderr
    assert "--database-url is not a PostgreSQL URL" in line


def test_env_is_private_ignored_by_git_and_redacted_in_diffs(project: Path) -> None:
    env = project / ".env"
    env.write_text("STRIPE_KEY=sk_live_123\nDEBUG=1\n")
    env.chmod(0o644)
    (project / ".gitignore").write_text("__pycache__/\n")
    url = "postgres://u:hunter2@db.internal/shop"
    out = run("init", "--database-url", url, "--dry-run")
    assert "+OBJECTS_DATABASE_URL=postgresql+asyncpg://u:***@db.internal/shop" in out
    assert " STRIPE_KEY=***" in out and " DEBUG=1" in out  # context lines, hidden where secret
    assert "hunter2" not in out and "sk_live_123" not in out
    assert "+.env" in out  # the .gitignore diff

    out = run("init", "--database-url", url)
    assert "updated: .env" in out and "updated: .gitignore" in out
    assert env.stat().st_mode & 0o777 == 0o600  # it holds a password now
    assert (project / ".gitignore").read_text().splitlines()[-1] == ".env"
    assert "up to date: .gitignore" in run("init", "--database-url", url)


def test_a_new_env_is_private_and_a_missing_gitignore_is_created(project: Path) -> None:
    out = run("init")
    assert "created: .gitignore" in out
    assert (project / ".env").stat().st_mode & 0o777 == 0o600
    ignored = (project / ".gitignore").read_text().splitlines()
    # The SQLite database in the project, with its -wal and -shm: data, not source.
    assert {".env", "objects.db", "objects.db-*"} <= set(ignored)
    assert ignored.count("# the SQLite database (objects init)") == 1  # one comment a group
    (project / ".gitignore").write_text(".env*\n!.env.example\n*.db*\n")  # ignored already
    assert "up to date: .gitignore" in run("init")
    (project / ".gitignore").write_text(".env\n!.env\n")  # and un-ignored again
    assert "updated: .gitignore" in run("init")


def test_the_help_shows_flags_as_flags() -> None:
    for args in (["init"], ["rm"], ["queue", "ls"], ["ls"], ["migrate"], ["nodes"]):
        out = run(*args, "--help")
        assert "<bool>" not in out, out
    out = run("init", "--help")
    assert re.search(r"^  --fly  ", out, re.MULTILINE) and re.search(r"^  --force  ", out,
                                                                        re.MULTILINE), out
    assert re.search(r"^  --dry-run  ", out, re.MULTILINE), out


def test_init_chains_onto_an_existing_alembic_history(project: Path) -> None:
    config = Config(str(project / "alembic.ini"))
    command.init(config, "migrations", template="async")
    ini = project / "alembic.ini"
    ini.write_text(
        ini.read_text().replace("driver://user:pass@localhost/dbname", "sqlite+aiosqlite:///app.db")
    )
    (project / "migrations" / "versions" / "0001_users.py").write_text(
        '"""users"""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        'revision = "0001users"\ndown_revision = None\n\n\n'
        "def upgrade():\n"
        '    op.create_table("users", sa.Column("id", sa.Integer, primary_key=True))\n\n\n'
        "def downgrade():\n"
        '    op.drop_table("users")\n'
    )
    env_py = snapshot(project)["migrations/env.py"]

    out = run("init")
    assert "created: migrations/versions/" in out
    assert "(storage tables version 1) follows 0001users" in out
    assert "storage_metadata" in out  # tells them to add the tables to target_metadata
    assert snapshot(project)["migrations/env.py"] == env_py  # their env.py is theirs
    script = ScriptDirectory.from_config(Config(str(ini)))
    (head,) = script.get_heads()
    revisions = [storage_revision(project, v) for v in range(1, LATEST_VERSION + 1)]
    assert revisions[-1].name.startswith(head)
    down = "0001users"  # one revision per storage version, chained after the user's head
    for path in revisions:
        revision = path.name.split("_")[0]
        assert script.get_revision(revision).down_revision == down
        down = revision

    again = snapshot(project)
    out = run("init")
    for path in revisions:
        assert f"up to date: migrations/versions/{path.name}" in out
    assert snapshot(project) == again

    run("migrate")
    with sqlite3.connect(project / "app.db") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        (version,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"users", "objects_checkpoints", "objects_journal"} <= tables
    assert version == head


def test_migrate_without_alembic_uses_the_versioned_ddl(project: Path) -> None:
    db = project / "plain.db"
    out = run("migrate", "--database-url", f"sqlite:///{db}")
    assert f"storage tables (versions 1 to {LATEST_VERSION}) ready" in out
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"objects_checkpoints", "objects_journal", "objects_pubsub"} <= tables
    again = run("migrate", "--database-url", f"sqlite:///{db}")  # idempotent, and says so
    assert "storage tables already at head" in again and ") ready" not in again


def test_migrate_through_alembic_reports_an_unreachable_database(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("init")
    monkeypatch.setenv("OBJECTS_DATABASE_URL", "postgresql+asyncpg://root@127.0.0.1:1/test")
    result = CliRunner().invoke(cli, ["migrate"])
    assert result.exit_code == 1, (result.output, result.exception)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: database unreachable") and "127.0.0.1" in line
    assert "Traceback" not in result.output


def test_a_project_at_version_1_gets_one_new_revision_per_version(project: Path) -> None:
    # What a project initialised by an older release has: the version-1 revision only.
    run("init")
    for version in range(2, LATEST_VERSION + 1):
        storage_revision(project, version).unlink()
    v1 = storage_revision(project, 1)
    frozen = v1.read_bytes()
    out = run("init")
    v2 = storage_revision(project, 2)
    assert f"created: migrations/versions/{v2.name}" in out
    assert f"(storage tables version 2) follows {v1.name.split('_')[0]}" in out
    assert v1.read_bytes() == frozen  # version 1 stays frozen
    assert "create_storage_tables(version=2, schema=None)" in v2.read_text()
    assert out.count("created: migrations/versions/") == LATEST_VERSION - 1
    done = run_real("objects", "migrate", cwd=project)
    assert done.returncode == 0, done.stderr
    check = run_real("alembic", "check", cwd=project)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_database_at_version_3_keeps_its_objects_through_the_upgrade(project: Path) -> None:
    # A project and its database as the release before version 4 left them.
    run("init")
    for version in range(4, LATEST_VERSION + 1):
        storage_revision(project, version).unlink()
    done = run_real("objects", "migrate", cwd=project)
    assert done.returncode == 0, done.stderr
    asyncio.run(_store_counter("sqlite+aiosqlite:///./objects.db", "a", 5))
    nodes = CliRunner().invoke(cli, ["nodes"])
    assert nodes.exit_code == 1 and "storage version 4 is not migrated" in nodes.stderr

    out = run("init")  # the upgrade: one new revision per version, the old ones frozen
    assert out.count("created: migrations/versions/") == LATEST_VERSION - 3
    v3 = storage_revision(project, 3).name.split("_")[0]
    assert f"(storage tables version 4) follows {v3}" in out
    v4 = storage_revision(project, 4).read_text()
    assert "create_storage_tables(version=4, schema=None)" in v4
    done = run_real("objects", "migrate", cwd=project)
    assert done.returncode == 0, done.stderr
    check = run_real("alembic", "check", cwd=project)
    assert check.returncode == 0, check.stdout + check.stderr
    assert durable_call("a", 1) == 6  # the version-3 object, thawed by the upgraded app

    # Down to version 3 and up again: the columns go and come back; the objects stay.
    assert run_real("alembic", "downgrade", v3, cwd=project).returncode == 0
    assert "pid_started" not in _node_columns(project / "objects.db")
    assert run_real("alembic", "upgrade", "head", cwd=project).returncode == 0
    assert {"boot_id", "pid_namespace", "pid", "pid_started"} <= _node_columns(
        project / "objects.db"
    )
    assert durable_call("a", 1) == 7


def test_a_database_at_version_4_gets_the_history_table_and_keeps_its_objects(
    project: Path,
) -> None:
    # A project and its database as the release before version 5 (kept history) left them.
    run("init")
    storage_revision(project, 5).unlink()
    done = run_real("objects", "migrate", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "objects_history" not in _tables(project / "objects.db")
    assert durable_call("a", 5) == 5
    history = CliRunner().invoke(cli, ["history", "counter", "a"])
    assert history.exit_code == 1 and "storage version 5 is not migrated" in history.stderr

    out = run("init")
    assert out.count("created: migrations/versions/") == 1
    v4 = storage_revision(project, 4).name.split("_")[0]
    assert f"(storage tables version 5) follows {v4}" in out
    assert "create_storage_tables(version=5, schema=None)" in storage_revision(
        project, 5
    ).read_text()
    done = run_real("objects", "migrate", cwd=project)
    assert done.returncode == 0, done.stderr
    check = run_real("alembic", "check", cwd=project)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "objects_history" in _tables(project / "objects.db")
    assert durable_call("a", 1) == 6

    assert run_real("alembic", "downgrade", "-1", cwd=project).returncode == 0
    assert "objects_history" not in _tables(project / "objects.db")
    assert run_real("alembic", "upgrade", "head", cwd=project).returncode == 0
    assert durable_call("a", 1) == 7


async def _store_counter(url: str, key: str, value: int) -> None:
    """Commit a counter through the storage alone (the runtime needs the latest tables)."""
    from pydantic_core import to_json

    from fastapi_objects.storage import Commit, open_storage

    storage = open_storage(url)
    try:
        await storage.commit([Commit(
            type="counter", key=key, expected_rev=0, new_rev=1, state=to_json({"value": value}),
            state_version=1, snapshot_rev=0, journal_rev=0,
        )])
    finally:
        await storage.close()


def _tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _node_columns(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[1] for r in conn.execute("PRAGMA table_info(objects_nodes)")}


def test_the_storage_revisions_run_offline_on_postgres(project: Path) -> None:
    # `alembic upgrade head --sql`: the migration as SQL, for a DBA to run; no database needed.
    (project / ".env").write_text("DATABASE_URL=postgres://shop@db.invalid:5432/shop\n")
    run("init", "--database", "postgres", "--schema", "shop")
    done = run_real("alembic", "upgrade", "head", "--sql", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE shop.objects_nodes" in done.stdout
    assert "ALTER TABLE shop.objects_nodes ADD COLUMN boot_id VARCHAR(64);" in done.stdout
    assert "ALTER TABLE shop.objects_nodes ADD COLUMN pid_started BIGINT;" in done.stdout


def test_the_templates_are_the_top_level_folder() -> None:
    # The design card's top level: templates/ beside the package (the wheel ships it inside;
    # tests/test_wheel.py proves that part).
    assert not (ROOT / "fastapi_objects" / "templates").exists()
    for name in ("alembic_async/README", "alembic_async/env.py", "alembic_async/script.py.mako",
                 "alembic_async/alembic.ini.mako", "objects_storage.py.jinja",
                 "fly.toml.jinja", "Dockerfile.jinja", "dockerignore.jinja"):
        assert (ROOT / "templates" / name).is_file(), name
    assert templates_dir() == ROOT / "templates"
    assert len((ROOT / "templates" / "alembic_async" / "README").read_text().splitlines()) == 1


def test_the_example_app_keeps_the_environment_init_renders() -> None:
    rendered = render_environment()
    assert (ROOT / "example_app" / "migrations" / "env.py").read_text() == rendered[
        Path("migrations/env.py")
    ]
    assert (ROOT / "example_app" / "migrations" / "script.py.mako").read_text() == rendered[
        Path("migrations/script.py.mako")
    ]
