"""The SQLAlchemy async engine the storage (and a project's Alembic ``env.py``) runs on."""

from __future__ import annotations

from typing import Any

import pydantic_core
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from ._sqlite import set_pragmas
from .urls import normalize_url


def _dumps(value: object) -> str:
    return pydantic_core.to_json(value).decode()


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url`` set up as the storage needs it (also for Alembic's env.py).

    Accepts the spellings users paste (``postgres://``, ``sqlite:///``, libpq's
    ``?sslmode=``); SQLite gets WAL and ``synchronous=FULL``; PostgreSQL plans every statement.
    """
    url, options = engine_options(url)
    options.update(kwargs)
    if options.get("poolclass") is not None:
        options.pop("pool_size", None)
        options.pop("max_overflow", None)
    engine = create_async_engine(url, **options)
    if url.startswith("sqlite"):
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def engine_options(url: str) -> tuple[str, dict[str, Any]]:
    """The URL as the driver takes it, and the engine options for it."""
    url = normalize_url(url)
    options: dict[str, Any] = {
        # A statement's parameters are keys and states: never in an error message or a log.
        "hide_parameters": True,
        "json_serializer": _dumps,
        "json_deserializer": pydantic_core.from_json,
    }
    if url.startswith("sqlite"):
        in_memory = url.split("///", 1)[-1] in ("", ":memory:") or "mode=memory" in url
        if in_memory:
            options["poolclass"] = StaticPool
        options["connect_args"] = {"timeout": 30}
    else:
        options["pool_size"] = 10
        options["max_overflow"] = 10
        # Our statements take arrays whose sizes change every batch: PostgreSQL's generic
        # plan for a prepared statement (after 5 runs) turned a 1 ms commit into 9 ms.
        connect_args: dict[str, Any] = {"server_settings": {"plan_cache_mode": "force_custom_plan"}}
        parsed = sa.engine.make_url(url)
        if "sslmode" in parsed.query:
            # libpq spelling (Fly and Heroku URLs say ?sslmode=disable); asyncpg takes ssl=.
            connect_args["ssl"] = parsed.query["sslmode"]
            url = parsed.difference_update_query(["sslmode"]).render_as_string(False)
        options["connect_args"] = connect_args
    return url, options


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    set_pragmas(cursor.execute)
    cursor.close()
