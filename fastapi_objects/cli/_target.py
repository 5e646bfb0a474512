"""Which database a command opens: ``--database-url``, ``--app`` or the app's settings.

Without options it is what the app itself would use: ``ObjectsSettings`` (``OBJECTS_*`` in the
environment, then ``./.env``; ``DATABASE_URL`` when no ``OBJECTS_DATABASE_URL`` is set; then the
default). The heavy modules (SQLAlchemy, the runtime,
the settings model) are imported by the functions that use them, so that ``objects --help``
stays quick.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._errors import CliError, one_line, redact

if TYPE_CHECKING:
    from ..runtime import DurableObject, Runtime
    from ..storage.sql import SQLStorage

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
    typer.Option(
        "--database-url",
        help="Overrides --app, OBJECTS_DATABASE_URL and DATABASE_URL (environment or .env).",
    ),
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
    source: str
    """Where the URL came from, for the ``database:`` line."""
    node_ttl: float = 10.0
    """Seconds after its last heartbeat that a node counts as dead, as the app reads it."""

    def describe(self) -> str:
        """One line naming the database (password hidden), its schema and where it came from."""
        where = f", schema {self.schema}" if self.schema else ""
        return f"database: {redact(self.url)}{where} ({self.source})"


def resolve(app: str | None, database_url: str | None, schema: str | None) -> Target:
    """Pick the database: ``--database-url``, then ``--app``, then the settings."""
    from pydantic import ValidationError

    from ..runtime.queues import QUEUE_TYPE
    from ..settings import ObjectsSettings

    runtime = load_runtime(app) if app else None
    try:  # the options, then what the app itself reads
        settings = ObjectsSettings.from_options(database_url=database_url, schema=schema)
    except ValidationError as exc:
        raise CliError(_settings_error(exc)) from None
    url, db_schema, node_ttl = settings.database_url, settings.db_schema, settings.node_ttl
    if runtime is not None:  # the app's runtime knows better than the settings
        url = url if database_url is not None else runtime.database_url
        db_schema = schema if schema is not None else runtime.settings.db_schema
        node_ttl = runtime.settings.node_ttl
    _check_url(url)
    if database_url is not None:
        source = "--database-url"
    elif runtime is not None:
        source = f"the runtime of --app {app}"
    else:
        source = settings.database_url_source
    # The app's own types (built-in ones, such as queues, have commands of their own).
    types = (
        {n: c for n, c in runtime.types.items() if n != QUEUE_TYPE} if runtime is not None else None
    )
    return Target(url, db_schema, types, source, node_ttl)


def _settings_error(exc: Any) -> str:
    """The first problem of a pydantic ``ValidationError`` over the settings, in one line."""
    error = exc.errors()[0]
    name = ".".join(str(part) for part in error["loc"]) or "settings"
    message = str(error["msg"]).removeprefix("Value error, ")
    if name == "database_url" or "URL" in message:
        return one_line(message)  # normalize_url's message names the URL already
    return one_line(f"invalid setting {name}: {message}")


def _check_url(url: str) -> None:
    import sqlalchemy as sa

    try:
        sa.engine.make_url(url)
    except (ValueError, sa.exc.ArgumentError) as exc:  # e.g. a port that is not a number
        raise CliError(f"malformed database URL {redact(url)!r}: {exc}") from None


def load_runtime(spec: str) -> Runtime:
    """Import ``module:attr``: a runtime, or a FastAPI app whose module holds exactly one."""
    from ..runtime import Runtime

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
    def runtime_of(value: object) -> Runtime | None:
        # A Runtime, or an Objects holding one (checked without importing the web framework).
        if isinstance(value, Runtime):
            return value
        inner = getattr(value, "runtime", None)
        return inner if isinstance(inner, Runtime) else None

    obj = getattr(module, attr)
    direct = runtime_of(obj) or runtime_of(getattr(getattr(obj, "state", None), "objects", None))
    if direct is not None:
        return direct
    found = {
        id(r): r for r in (runtime_of(v) for v in vars(module).values()) if r is not None
    }
    if len(found) != 1:
        what = "no" if not found else "several"
        raise CliError(f"{spec} is not an Objects runtime and {module_name} holds {what} runtime")
    return next(iter(found.values()))


# What each storage version adds first (a table, or a table's column): its presence says that
# version was migrated; and what the version holds, for the error that asks for it.
_VERSION_MARKS = {
    1: ("objects_checkpoints", None), 2: ("objects_nodes", None), 3: ("objects_alarms", None),
    4: ("objects_nodes", "boot_id"), 5: ("objects_history", None),
}
_VERSION_HOLDS = {
    2: "nodes and owners", 3: "alarms", 4: "the nodes' processes", 5: "kept history",
}


@asynccontextmanager
async def open_target(
    target: Target, *, create: bool = False, version: int = 1
) -> AsyncIterator[SQLStorage]:
    """Open the target's SQL storage; unless ``create``, the tables up to ``version`` must exist.

    ``version`` 2 is what owners need (the owner of ``ls``/``show``, and every listed status:
    an object a node holds is active), 4 what ``objects nodes`` reads.
    """
    from ..storage import open_storage
    from ..storage.sql import SQLStorage

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
                present = await conn.run_sync(migrated_versions, target.schema)
            where = f" in {redact(target.url)}" + (
                f" (schema {target.schema})" if target.schema else ""
            )
            if 1 not in present:
                raise CliError(f"no storage tables{where}: run `objects migrate`")
            missing = [v for v in range(2, version + 1) if v not in present]
            if missing:
                raise CliError(
                    f"storage version {missing[0]} is not migrated{where} "
                    f"({_VERSION_HOLDS[missing[0]]} live there): run `objects migrate` (with "
                    "Alembic, `objects init` first adds the revision)"
                )
        yield storage
    finally:
        await storage.close()


def migrated_versions(conn: Any, schema: str | None) -> set[int]:
    """The storage versions whose tables are in the database (a sync SQLAlchemy connection)."""
    import sqlalchemy as sa

    inspector = sa.inspect(conn)
    present = set()
    for version, (table, column) in _VERSION_MARKS.items():
        if inspector.has_table(table, schema=schema) and (
            column is None
            or column in {c["name"] for c in inspector.get_columns(table, schema=schema)}
        ):
            present.add(version)
    return present


def _require_sqlite_file(url: str) -> None:
    # Opening a missing SQLite file would create an empty one: say what to do instead.
    import sqlalchemy as sa

    database = sa.engine.make_url(url).database or ""
    if database not in ("", ":memory:") and not Path(database).is_file():
        raise CliError(f"no database file {database}: run `objects migrate` first")
