"""Storage: one async contract, backends chosen by URL scheme.

- ``memory://`` keeps everything in the process (tests, demos);
- ``sqlite+aiosqlite:///./objects.db`` (also ``sqlite:///...``) is the embedded default;
- ``postgresql+asyncpg://user@host/db`` (also ``postgres://`` and ``postgresql://``, as Fly.io
  and Heroku write them) is production; it needs the ``postgres`` extra.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from .._exceptions import MissingDependency
from .base import (
    DECLARED_DEAD,
    STATUSES,
    Alarm,
    AlarmWrite,
    Checkpoint,
    Claim,
    Commit,
    JournalEntry,
    KeptState,
    NodeInfo,
    NodeProcess,
    ObjectPage,
    ObjectQuery,
    StatusUpdate,
    Storage,
    Thawed,
    TypeStats,
    decode_cursor,
    encode_cursor,
)
from .tables import create_storage_tables, drop_storage_tables, storage_metadata
from .urls import normalize_url

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./objects.db"

__all__ = [
    "DECLARED_DEAD",
    "DEFAULT_DATABASE_URL",
    "STATUSES",
    "Alarm",
    "AlarmWrite",
    "Checkpoint",
    "Claim",
    "Commit",
    "JournalEntry",
    "KeptState",
    "NodeInfo",
    "NodeProcess",
    "ObjectPage",
    "ObjectQuery",
    "StatusUpdate",
    "Storage",
    "Thawed",
    "TypeStats",
    "create_engine",
    "create_storage_tables",
    "decode_cursor",
    "drop_storage_tables",
    "encode_cursor",
    "normalize_url",
    "open_storage",
    "storage_metadata",
]


def open_storage(url: str, *, schema: str | None = None) -> Storage:
    """Return the storage backend for ``url`` (not yet connected)."""
    url = normalize_url(url)
    scheme = url.partition("://")[0]
    if scheme == "memory":
        from .memory import MemoryStorage

        return MemoryStorage(url)
    if scheme == "postgresql+asyncpg":
        if importlib.util.find_spec("asyncpg") is None:
            raise MissingDependency(
                "PostgreSQL needs asyncpg: pip install 'fastapi-objects[postgres]'"
            )
    elif scheme != "sqlite+aiosqlite":
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}: use memory://, "
            "sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db"
        )
    from .sql import SQLStorage

    return SQLStorage(url, schema=schema)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async SQLAlchemy engine for ``url`` as the storage sets it up (for Alembic's env.py).

    Accepts ``postgres://``, ``sqlite:///`` and libpq's ``?sslmode=``; extra keyword
    arguments go to ``create_async_engine`` (e.g. ``poolclass=NullPool``).
    """
    from .engine import create_engine as _create_engine

    return _create_engine(url, **kwargs)
