"""Alembic environment (async), written by `objects init`.

The database is the app's: OBJECTS_DATABASE_URL (else DATABASE_URL) and OBJECTS_SCHEMA as
fastapi_objects reads them (environment first, then the .env beside alembic.ini);
`sqlalchemy.url` in alembic.ini wins when set. The storage tables and Alembic's version table
live in OBJECTS_SCHEMA when it is set (PostgreSQL).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

from fastapi_objects.settings import ObjectsSettings
from fastapi_objects.storage import create_engine, normalize_url, storage_metadata

config = context.config
if config.config_file_name is not None:
    # disable_existing_loggers=False: `objects migrate` runs this inside its own process.
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# The settings model the app's Objects(...) reads, so that both use the same database.
settings = ObjectsSettings(
    _env_file=Path(config.config_file_name or "alembic.ini").resolve().parent / ".env"
)
URL = normalize_url(config.get_main_option("sqlalchemy.url") or settings.database_url)
SCHEMA = settings.db_schema

# Add your own MetaData here (e.g. Base.metadata) so `alembic check` compares your tables too.
target_metadata = [storage_metadata(SCHEMA)]


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Compare only the storage schema (add None here when your own tables use the default)."""
    return type_ != "schema" or name == SCHEMA


def configure(**kwargs: Any) -> None:
    """Configure the migration context, keeping the version table beside the storage tables."""
    context.configure(
        target_metadata=target_metadata,
        version_table_schema=SCHEMA,
        include_schemas=SCHEMA is not None,
        include_name=include_name if SCHEMA is not None else None,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Emit the migration as SQL (`alembic upgrade head --sql`)."""
    configure(url=URL, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    """Run the migrations on one connection, creating the schema first when needed."""
    if SCHEMA is not None and connection.dialect.name == "postgresql":
        connection.execute(sa.schema.CreateSchema(SCHEMA, if_not_exists=True))
        connection.commit()
    configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    """Connect with the async driver and run the migrations."""
    engine = create_engine(URL, poolclass=sa.pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_async_migrations())
