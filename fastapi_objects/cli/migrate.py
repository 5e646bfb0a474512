"""``objects migrate``: ``alembic upgrade head`` where the project has Alembic, else the DDL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa
import typer
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from ._errors import CliError, redact, reported
from ._project import alembic_files
from ._target import AppOption, DatabaseUrlOption, SchemaOption, Target, open_target, resolve


@reported
def migrate(
    app: AppOption = None, database_url: DatabaseUrlOption = None, schema: SchemaOption = None
) -> None:
    """Create or upgrade the storage tables (alembic upgrade head, or the versioned DDL)."""
    config = _alembic_config(Path.cwd())
    if config is None:
        target = resolve(app, database_url, schema)
        asyncio.run(_create_tables(target))
        where = f" (schema {target.schema})" if target.schema else ""
        typer.echo(f"storage tables (version 1) ready in {redact(target.url)}{where}")
        return
    if schema is not None:
        raise CliError(
            "--schema does not apply with Alembic: the schema is in the migration (OBJECTS_SCHEMA)"
        )
    if app or database_url:
        url = resolve(app, database_url, None).url
        # configparser interpolation: a literal % in a password must be doubled.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")
    heads = ", ".join(ScriptDirectory.from_config(config).get_heads()) or "(empty history)"
    typer.echo(f"alembic: database upgraded to head {heads}")


def _alembic_config(root: Path) -> Config | None:
    """The project's Alembic configuration, as the ``alembic`` command would read it."""
    ini, toml = alembic_files(root)
    return None if ini is None and toml is None else Config(file_=ini, toml_file=toml)


async def _create_tables(target: Target) -> None:
    async with open_target(target, create=True) as storage:
        try:
            await storage.create_tables()
        except sa.exc.ArgumentError as exc:
            raise CliError(f"malformed database URL {redact(target.url)!r}: {exc}") from None
