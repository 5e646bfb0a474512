"""``objects init``: write the storage settings and the migration that creates the tables."""

from __future__ import annotations

import enum
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from ._errors import CliError, redact, reported
from ._files import PlannedFile, apply, plan, plan_gitignore
from ._project import Project, find_project, merge_dotenv, read_dotenv, setting

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Database(enum.StrEnum):
    """The database ``init`` configures."""

    sqlite = "sqlite"
    postgres = "postgres"


@reported
def init(
    database: Annotated[
        Database | None,
        typer.Option(help="SQLite file (default) or PostgreSQL (default with a postgres URL)."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url", metavar="URL",
            help="The database to write to .env; --database postgres without it reuses "
            "OBJECTS_DATABASE_URL or DATABASE_URL, or asks.",
        ),
    ] = None,
    schema: Annotated[
        str | None, typer.Option(help="PostgreSQL schema for the storage tables.")
    ] = None,
    fly: Annotated[
        bool, typer.Option("--fly", help="Also write fly.toml, a Dockerfile and .dockerignore.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print every file as a diff; write nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite files and .env values that differ.")
    ] = False,
) -> None:
    """Write the storage settings (.env) and the Alembic migration that creates the tables."""
    if database is None:
        database = Database.postgres if _is_postgres(database_url) else Database.sqlite
    if schema is not None and database is Database.sqlite:
        raise CliError("--schema needs --database postgres (SQLite has one schema per file)")
    if schema is not None and not _SCHEMA_NAME.match(schema):
        raise CliError(f"invalid schema name {schema!r}: use lowercase letters, digits and _")
    root = Path.cwd()
    project = find_project(root)
    url = _database_url(database, database_url, root)
    env, used = _dotenv(project, url, schema, force)
    ignore = [(".env", "secrets: database URLs (objects init)"),
              *_database_files(url, project.root)]
    planned, notes = [env, plan_gitignore(project.root, ignore)], _overridden(used)
    planned += _migration(project, schema, force, notes)
    if fly:
        planned += _fly(project, schema, force)
        notes += _fly_notes(project, database)
    if dry_run:
        for item in planned:
            if item.old != item.new:
                typer.echo(item.diff(), nl=False)
    else:
        apply(root, planned)
    for item in planned:
        typer.echo(f"{'would be ' if dry_run else ''}{item.status}: {item.path.as_posix()}")
        for line in item.kept:
            typer.echo(f"  {line}")
    if dry_run:
        typer.echo("dry run: nothing was written")
    for note in notes:
        typer.echo(f"note: {note}")
    typer.echo(_database_line(used))
    _next_steps(project, fly)


def _database_files(url: str, root: Path) -> list[tuple[str, str]]:
    """``.gitignore`` entries for a SQLite database inside the project (and its -wal, -shm)."""
    if not url.startswith("sqlite"):
        return []
    path = (Path.cwd() / url.split("///", 1)[1]).resolve()
    if not path.is_relative_to(root.resolve()):
        return []
    name = path.relative_to(root.resolve()).as_posix()
    why = "the SQLite database (objects init)"
    return [(name, why), (f"{name}-*", why)]


def _database_url(database: Database, given: str | None, root: Path) -> str:
    """The URL to write: ``--database-url``; for PostgreSQL one already set, else asked for."""
    from ..storage import DEFAULT_DATABASE_URL

    if database is Database.sqlite:
        url = _normalized(given, "--database-url") if given else DEFAULT_DATABASE_URL
        if not url.startswith("sqlite+aiosqlite://"):
            raise CliError(f"--database-url {redact(url)} is not SQLite (for PostgreSQL: "
                           "--database postgres)")
        return url
    if given:
        return _postgres(given, "--database-url")
    existing = setting("OBJECTS_DATABASE_URL", root)
    if existing and _is_postgres(existing):
        return _postgres(existing, "OBJECTS_DATABASE_URL")
    existing = setting("DATABASE_URL", root)
    if existing:
        return _postgres(existing, "DATABASE_URL")
    if not sys.stdin.isatty():
        raise CliError(
            "--database postgres needs the database's URL, and nothing was written: pass "
            "--database-url postgresql://USER:PASSWORD@HOST:5432/DBNAME, or set DATABASE_URL "
            "or OBJECTS_DATABASE_URL (in the environment or .env)"
        )
    answer = typer.prompt(
        "PostgreSQL URL (postgresql://USER:PASSWORD@HOST:5432/DBNAME, not shown)",
        hide_input=True,
    )
    return _postgres(answer.strip(), "the URL given")


def _normalized(url: str, where: str) -> str:
    from ..storage import normalize_url

    try:
        return normalize_url(url)
    except ValueError as exc:
        raise CliError(f"{where}: {exc}") from None


def _is_postgres(url: str | None) -> bool:
    return bool(url) and str(url).partition("://")[0] in ("postgres", "postgresql",
                                                          "postgresql+asyncpg")


def _postgres(url: str, where: str) -> str:
    normalized = _normalized(url, where)
    if not normalized.startswith("postgresql+asyncpg://"):
        raise CliError(f"{where} is not a PostgreSQL URL: {redact(url)}")
    return normalized


Used = dict[str, tuple[str, str]]
"""The value the app will read for each setting init writes, and where from."""


def _dotenv(
    project: Project, url: str, schema: str | None, force: bool
) -> tuple[PlannedFile, Used]:
    """Plan .env, and say what the app will read from it or from the environment."""
    env_file = project.root / ".env"
    old = env_file.read_text() if env_file.is_file() else None
    values = {"OBJECTS_DATABASE_URL": url}
    if schema is not None:
        values["OBJECTS_SCHEMA"] = schema
    elif force and "OBJECTS_SCHEMA" in read_dotenv(env_file):
        raise CliError(".env sets OBJECTS_SCHEMA: pass --schema with it, or remove it from .env")
    text, kept = merge_dotenv(old, values, force)
    lines = tuple(
        f"{name}={_shown(name, value)} stays; init would write {_shown(name, values[name])}"
        for name, value in kept.items()
    )
    used = {name: (kept.get(name, value), ".env") for name, value in values.items()}
    if schema is None and "OBJECTS_SCHEMA" in read_dotenv(env_file):
        used["OBJECTS_SCHEMA"] = (read_dotenv(env_file)["OBJECTS_SCHEMA"], ".env")
    for name in ("OBJECTS_DATABASE_URL", "OBJECTS_SCHEMA"):
        if os.environ.get(name):  # the environment wins over .env, for the app as for us
            used[name] = (os.environ[name], "the environment")
    env = plan(project.root, Path(".env"), text, force=force, merge=True, kept=lines, secret=True)
    return env, used


def _shown(name: str, value: str) -> str:
    return redact(value) if name.endswith("_URL") else value


def _overridden(used: Used) -> list[str]:
    return [
        f"{name} in your environment ({_shown(name, value)}) wins over .env for the app and "
        "for objects migrate"
        for name, (value, source) in used.items()
        if source == "the environment"
    ]


def _database_line(used: Used) -> str:
    """``database: ...``: what the app and ``objects migrate`` will use, and where from."""
    url, source = used["OBJECTS_DATABASE_URL"]
    line = f"database: {redact(url)}"
    if "OBJECTS_SCHEMA" in used:
        line += f", schema {used['OBJECTS_SCHEMA'][0]}"
    return f"{line} (OBJECTS_DATABASE_URL in {source})"


def _migration(
    project: Project, schema: str | None, force: bool, notes: list[str]
) -> list[PlannedFile]:
    """Plan one storage revision per DDL version, chained; existing ones stay as they are."""
    from ..storage.tables import LATEST_VERSION
    from . import _alembic

    versions = range(1, LATEST_VERSION + 1)
    if not project.has_alembic:
        files = _alembic.render_environment()
        folder, head = Path(_alembic.MIGRATIONS_DIR) / "versions", None
        for version in versions:
            revision = _alembic.new_revision_id()
            files[_alembic.revision_file(folder, revision, version)] = _alembic.render_revision(
                revision, head, schema, version
            )
            head = revision
        return [plan(project.root, path, text, force=force) for path, text in files.items()]
    script, head, found = _alembic.existing_history(project)
    _check_env_py(project, Path(script.dir), notes)
    folder = Path(script.versions).resolve().relative_to(project.root.resolve())
    planned = []
    for version in versions:
        existing = found.get(version)
        if existing is not None and not existing.written_by_init:
            notes.append(
                f"revision {existing.revision} ({existing.path}) creates the storage tables "
                f"(version {version})"
            )
        elif existing is not None:
            text = _alembic.render_revision(
                existing.revision, existing.down_revision, schema, version
            )
            planned.append(plan(project.root, existing.path, text, force=force))
        else:
            revision = _alembic.new_revision_id()
            path = _alembic.revision_file(folder, revision, version)
            notes.append(
                f"the new revision {revision} (storage tables version {version}) follows "
                f"{head or '(none)'}"
            )
            text = _alembic.render_revision(revision, head, schema, version)
            planned.append(plan(project.root, path, text, force=force))
            head = revision
    return planned


def _check_env_py(project: Project, script_dir: Path, notes: list[str]) -> None:
    env_py = script_dir / "env.py"
    if env_py.is_file() and "storage_metadata" not in env_py.read_text():
        notes.append(
            f"add the storage tables to target_metadata in {env_py.relative_to(project.root)} "
            "(from fastapi_objects.storage import storage_metadata; target_metadata = "
            "[Base.metadata, storage_metadata(schema)]) or autogenerate will propose dropping them"
        )


def _fly(project: Project, schema: str | None, force: bool) -> list[PlannedFile]:
    from ._templates import render

    context = {
        "name": project.name, "schema": schema, "dependencies": project.dependencies,
        "app_path": project.app_path,
    }
    return [
        plan(project.root, Path("fly.toml"), render("fly.toml.jinja", **context), force=force),
        plan(project.root, Path("Dockerfile"), render("Dockerfile.jinja", **context), force=force),
        plan(project.root, Path(".dockerignore"), render("dockerignore.jinja"), force=force),
    ]


def _fly_notes(project: Project, database: Database) -> list[str]:
    notes = []
    if database is Database.sqlite:
        notes.append("on Fly.io the app uses the attached Postgres (DATABASE_URL), not SQLite")
    if not project.dependencies:
        notes.append("no requirements.txt or [project] dependencies found: the Dockerfile "
                     "installs fastapi-objects[postgres] only; add your dependencies to it")
    if not project.serves_healthz:
        notes.append(
            "fly.toml checks GET /healthz, which no module of your project names: serve it (200 "
            "when the app and its database answer; fastapi_objects' docs/deploy-fly.md has one) "
            "or change the check's path, or deploys will wait for it in vain"
        )
    return notes


def _next_steps(project: Project, fly: bool) -> None:
    typer.echo("next:")
    typer.echo("  objects migrate    # create the storage tables")
    typer.echo(f"  uvicorn {project.app_path}    # Objects(...) reads the database from .env")
    if fly:
        db = f"{project.name}-db"
        typer.echo("  fly launch --no-deploy --copy-config    # a Fly app, keeping this fly.toml")
        typer.echo(f"  fly postgres create --name {db}")
        typer.echo(f"  fly postgres attach {db}    # sets DATABASE_URL, which the app reads")
        typer.echo("  fly secrets set OBJECTS_CLUSTER_SECRET=$(openssl rand -hex 32)")
        typer.echo("  fly deploy    # runs objects migrate first (release_command)")
