"""Which database the inspection commands open: ``--database-url``, ``--app`` or the settings."""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer

from ..runtime import DurableObject, Runtime
from ..storage import DEFAULT_DATABASE_URL, normalize_url, open_storage
from ..storage.sql import SQLStorage
from ._errors import CliError, redact
from ._project import setting

AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        metavar="MODULE:ATTR",
        help="Your Objects runtime (or the FastAPI app whose module holds it), e.g. app.main:app.",
    ),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Overrides --app and OBJECTS_DATABASE_URL (env or .env)."),
]
SchemaOption = Annotated[
    str | None,
    typer.Option("--schema", help="PostgreSQL schema of the tables (default: OBJECTS_SCHEMA)."),
]


@dataclass(frozen=True)
class Target:
    """The database to open, and the object types the app registers (when ``--app`` is given)."""

    url: str
    schema: str | None
    types: dict[str, type[DurableObject[Any]]] | None


def resolve(app: str | None, database_url: str | None, schema: str | None) -> Target:
    """Pick the database: ``--database-url``, then ``--app``, then OBJECTS_DATABASE_URL."""
    runtime = load_runtime(app) if app else None
    url = (
        database_url
        or (runtime.database_url if runtime is not None else None)
        or setting("OBJECTS_DATABASE_URL")
        or DEFAULT_DATABASE_URL
    )
    if schema is None:
        # The app's runtime knows its schema; without one, the settings say it.
        schema = (
            getattr(runtime.storage, "schema", None) if runtime is not None
            else setting("OBJECTS_SCHEMA")
        )
    try:
        url = normalize_url(url)
    except ValueError as exc:  # its message names the URL
        raise CliError(str(exc)) from None
    try:
        sa.engine.make_url(url)
    except (ValueError, sa.exc.ArgumentError) as exc:  # e.g. a port that is not a number
        raise CliError(f"malformed database URL {redact(url)!r}: {exc}") from None
    return Target(url, schema, dict(runtime.types) if runtime is not None else None)


def load_runtime(spec: str) -> Runtime:
    """Import ``module:attr``: a runtime, or a FastAPI app whose module holds exactly one."""
    module_name, sep, attr = spec.partition(":")
    if not (sep and module_name and attr):
        raise CliError(f"--app takes module:attr (e.g. app.main:app), not {spec!r}")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise CliError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    if not hasattr(module, attr):
        raise CliError(f"{module_name} has no attribute {attr!r}")
    obj = getattr(module, attr)
    if isinstance(obj, Runtime):
        return obj
    state_runtime = getattr(getattr(obj, "state", None), "objects", None)
    if isinstance(state_runtime, Runtime):
        return state_runtime
    found = {id(v): v for v in vars(module).values() if isinstance(v, Runtime)}
    if len(found) != 1:
        what = "no" if not found else "several"
        raise CliError(f"{spec} is not an Objects runtime and {module_name} holds {what} runtime")
    return next(iter(found.values()))


@asynccontextmanager
async def open_target(target: Target, *, create: bool = False) -> AsyncIterator[SQLStorage]:
    """Open the target's SQL storage; unless ``create``, its tables must already exist."""
    scheme = target.url.partition("://")[0]
    if scheme == "memory":
        raise CliError("memory:// storage lives inside your app's process: nothing to open here")
    if scheme.startswith("sqlite") and not create:
        _require_sqlite_file(target.url)
    try:
        storage = open_storage(target.url, schema=target.schema)
    except ValueError as exc:  # an unsupported scheme, or a schema on SQLite
        raise CliError(str(exc)) from None
    if not isinstance(storage, SQLStorage):
        raise CliError(f"cannot open {redact(target.url)}: not a SQL database")
    try:
        if not create:
            async with storage.engine.connect() as conn:
                present = await conn.run_sync(
                    lambda c: sa.inspect(c).has_table("objects_checkpoints", schema=target.schema)
                )
            if not present:
                where = f" (schema {target.schema})" if target.schema else ""
                raise CliError(
                    f"no storage tables in {redact(target.url)}{where}: run `objects migrate`"
                )
        yield storage
    finally:
        await storage.close()


def _require_sqlite_file(url: str) -> None:
    # Opening a missing SQLite file would create an empty one: say what to do instead.
    database = sa.engine.make_url(url).database or ""
    if database not in ("", ":memory:") and not Path(database).is_file():
        raise CliError(f"no database file {database}: run `objects migrate` first")
