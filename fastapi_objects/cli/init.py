"""``objects init``: write the storage settings and the migration that creates the tables."""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Annotated

import typer

from ..storage import DEFAULT_DATABASE_URL, normalize_url
from . import _alembic
from ._errors import CliError, redact, reported
from ._files import PlannedFile, apply, plan
from ._project import Project, find_project, merge_dotenv, read_dotenv, setting
from ._templates import render

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Database(enum.StrEnum):
    """The database ``init`` configures."""

    sqlite = "sqlite"
    postgres = "postgres"


@reported
def init(
    database: Annotated[
        Database, typer.Option(help="SQLite file (default) or PostgreSQL (reuses DATABASE_URL).")
    ] = Database.sqlite,
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
    """Write the storage settings (.env, a settings module) and the Alembic migration."""
    if schema is not None and database is Database.sqlite:
        raise CliError("--schema needs --database postgres (SQLite has one schema per file)")
    if schema is not None and not _SCHEMA_NAME.match(schema):
        raise CliError(f"invalid schema name {schema!r}: use lowercase letters, digits and _")
    root = Path.cwd()
    project = find_project(root)
    url = _database_url(database, root, project)
    planned, notes = _settings(project, url, schema, force)
    if database is Database.postgres and not setting("DATABASE_URL", root):
        notes.append("no DATABASE_URL found: put your database in OBJECTS_DATABASE_URL in .env")
    planned += _migration(project, schema, force, notes)
    if fly:
        planned += _fly(project, schema, force)
        if database is Database.sqlite:
            notes.append("on Fly.io the app uses the attached Postgres (DATABASE_URL), not SQLite")
    if dry_run:
        for item in planned:
            if item.old != item.new:
                typer.echo(item.diff(), nl=False)
        for item in planned:
            typer.echo(f"would be {item.status}: {item.path.as_posix()}")
        typer.echo("dry run: nothing was written")
    else:
        apply(root, planned)
        for item in planned:
            typer.echo(f"{item.status}: {item.path.as_posix()}")
    for note in notes:
        typer.echo(f"note: {note}")
    typer.echo(f"database: {redact(url)}" + (f" (schema {schema})" if schema else ""))
    _next_steps(project, fly)


def _database_url(database: Database, root: Path, project: Project) -> str:
    if database is Database.sqlite:
        return DEFAULT_DATABASE_URL
    existing = setting("DATABASE_URL", root)
    if existing:
        try:
            url = normalize_url(existing)
        except ValueError as exc:
            raise CliError(f"DATABASE_URL: {exc}") from None
        if not url.startswith("postgresql+asyncpg://"):
            raise CliError(f"DATABASE_URL is not a PostgreSQL URL: {redact(existing)}")
        return url
    return f"postgresql+asyncpg://postgres@localhost:5432/{project.name.replace('-', '_')}"


def _settings(
    project: Project, url: str, schema: str | None, force: bool
) -> tuple[list[PlannedFile], list[str]]:
    env_file = project.root / ".env"
    old = env_file.read_text() if env_file.is_file() else None
    values = {"OBJECTS_DATABASE_URL": url}
    if schema is not None:
        values["OBJECTS_SCHEMA"] = schema
    elif force and "OBJECTS_SCHEMA" in read_dotenv(env_file):
        raise CliError(".env sets OBJECTS_SCHEMA: pass --schema with it, or remove it from .env")
    text, notes = merge_dotenv(old, values, force)
    module = render(
        "objects_settings.py.jinja",
        settings_module=project.settings_module,
        depth=len(project.package_dir.parts),
    )
    return [
        plan(project.root, Path(".env"), text, force=force, merge=True),
        plan(project.root, project.settings_file, module, force=force),
    ], notes


def _migration(
    project: Project, schema: str | None, force: bool, notes: list[str]
) -> list[PlannedFile]:
    if not project.has_alembic:
        files = _alembic.render_environment()
        versions = Path(_alembic.MIGRATIONS_DIR) / "versions"
        revision = _alembic.new_revision_id()
        files[_alembic.revision_file(versions, revision)] = _alembic.render_revision(
            revision, None, schema
        )
        return [plan(project.root, path, text, force=force) for path, text in files.items()]
    script, head, found = _alembic.existing_history(project)
    _check_env_py(project, Path(script.dir), notes)
    if found is not None:
        if not found.written_by_init:
            notes.append(f"revision {found.revision} ({found.path}) creates the storage tables")
            return []
        text = _alembic.render_revision(found.revision, found.down_revision, schema)
        return [plan(project.root, found.path, text, force=force)]
    revision = _alembic.new_revision_id()
    versions = Path(script.versions).resolve().relative_to(project.root.resolve())
    path = _alembic.revision_file(versions, revision)
    notes.append(f"the new revision {revision} follows the current head {head or '(none)'}")
    return [plan(project.root, path, _alembic.render_revision(revision, head, schema), force=force)]


def _check_env_py(project: Project, script_dir: Path, notes: list[str]) -> None:
    env_py = script_dir / "env.py"
    if env_py.is_file() and "storage_metadata" not in env_py.read_text():
        notes.append(
            f"add the storage tables to target_metadata in {env_py.relative_to(project.root)} "
            "(from fastapi_objects.storage import storage_metadata; target_metadata = "
            "[Base.metadata, storage_metadata(schema)]) or autogenerate will propose dropping them"
        )


def _fly(project: Project, schema: str | None, force: bool) -> list[PlannedFile]:
    context = {
        "name": project.name, "schema": schema, "install": project.install,
        "app_path": project.app_path,
    }
    return [
        plan(project.root, Path("fly.toml"), render("fly.toml.jinja", **context), force=force),
        plan(project.root, Path("Dockerfile"), render("Dockerfile.jinja", **context), force=force),
        plan(project.root, Path(".dockerignore"), render("dockerignore.jinja"), force=force),
    ]


def _next_steps(project: Project, fly: bool) -> None:
    typer.echo("next:")
    typer.echo("  objects migrate    # create the storage tables")
    typer.echo(f"  # where {project.app_module} builds its runtime:")
    typer.echo(f"  from {project.settings_module} import DATABASE_URL, SCHEMA")
    typer.echo("  objects = Objects(objects=[...], database_url=DATABASE_URL, schema=SCHEMA)")
    if fly:
        typer.echo("  fly launch --no-deploy && fly postgres attach <db> && fly deploy --ha=false")
