"""``objects migrate``: ``alembic upgrade head`` where the project has Alembic, else the DDL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ._errors import CliError, redact, reported
from ._project import alembic_files
from ._target import (
    AppOption,
    DatabaseUrlOption,
    SchemaOption,
    Target,
    migrated_versions,
    open_target,
    resolve,
)

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory


@reported
def migrate(
    app: AppOption = None, database_url: DatabaseUrlOption = None, schema: SchemaOption = None
) -> None:
    """Create or upgrade the storage tables (alembic upgrade head, or the versioned DDL)."""
    config = _alembic_config(Path.cwd())
    if config is None:
        target = resolve(app, database_url, schema)
        from ..storage.tables import LATEST_VERSION

        typer.echo(target.describe())
        created = asyncio.run(_create_tables(target))
        versions = f"versions 1 to {LATEST_VERSION}"
        typer.echo(f"storage tables ({versions}) ready" if created else
                   f"storage tables already at head ({versions}): nothing to create")
        return
    from alembic import command
    from alembic.script import ScriptDirectory

    if schema is not None:
        raise CliError(
            "--schema does not apply with Alembic: the schema is in the migration (OBJECTS_SCHEMA)"
        )
    if app or database_url:
        url = resolve(app, database_url, None).url
        # configparser interpolation: a literal % in a password must be doubled.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    script = ScriptDirectory.from_config(config)
    heads = ", ".join(script.get_heads()) or "(empty history)"
    with _naming_databases():  # env.py decides where to connect: name what it connects to
        if _current(config, script) == set(script.get_heads()):
            typer.echo(f"alembic: already at head {heads}: nothing to upgrade")
            return
        command.upgrade(config, "head")
    typer.echo(f"alembic: database upgraded to head {heads}")


def _current(config: Config, script: ScriptDirectory) -> set[str]:
    """The revisions the database is at, read by the project's env.py as ``alembic current``."""
    from alembic.runtime.environment import EnvironmentContext

    current: set[str] = set()

    def read(rev: Any, context: Any) -> list[Any]:
        current.update(context.get_current_heads())
        return []  # migrate nothing

    with EnvironmentContext(config, script, fn=read, dont_mutate=True):
        script.run_env()
    return current


def _alembic_config(root: Path) -> Config | None:
    """The project's Alembic configuration, as the ``alembic`` command would read it."""
    ini, toml = alembic_files(root)
    if ini is None and toml is None:
        return None
    from alembic.config import Config

    return Config(file_=ini, toml_file=toml)


@contextmanager
def _naming_databases() -> Iterator[None]:
    """Print ``database: <url>`` once per database any engine connects to meanwhile."""
    import sqlalchemy as sa

    named: set[str] = set()

    def connected(connection: sa.Connection, *args: Any) -> None:
        url = connection.engine.url.render_as_string(hide_password=False)
        if url not in named:
            named.add(url)
            typer.echo(f"database: {redact(url)} (as the Alembic environment connects)")

    sa.event.listen(sa.Engine, "engine_connect", connected)
    try:
        yield
    finally:
        sa.event.remove(sa.Engine, "engine_connect", connected)


async def _create_tables(target: Target) -> bool:
    """Create what is missing; whether anything was (False: every version was there)."""
    import sqlalchemy as sa

    from ..storage.tables import LATEST_VERSION

    async with open_target(target, create=True) as storage:
        try:
            async with storage.engine.connect() as conn:
                present = await conn.run_sync(migrated_versions, target.schema)
            if present >= set(range(1, LATEST_VERSION + 1)):
                return False
            await storage.create_tables()
        except sa.exc.ArgumentError as exc:
            raise CliError(f"malformed database URL {redact(target.url)!r}: {exc}") from None
    return True
