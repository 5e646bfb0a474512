"""Storage: one async contract, backends chosen by URL scheme.

- ``memory://`` keeps everything in the process (tests, demos);
- ``sqlite+aiosqlite:///./objects.db`` (also ``sqlite:///...``) is the embedded default;
- ``postgresql+asyncpg://user@host/db`` (also ``postgres://`` and ``postgresql://``, as Fly.io
  and Heroku write them) is production; it needs the ``postgres`` extra.
"""

from __future__ import annotations

import importlib.util

from .._exceptions import MissingDependency
from .base import (
    Checkpoint,
    Commit,
    JournalEntry,
    ObjectPage,
    ObjectQuery,
    StatusUpdate,
    Storage,
    TypeStats,
)
from .tables import create_storage_tables, drop_storage_tables, storage_metadata

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./objects.db"

__all__ = [
    "DEFAULT_DATABASE_URL",
    "Checkpoint",
    "Commit",
    "JournalEntry",
    "ObjectPage",
    "ObjectQuery",
    "StatusUpdate",
    "Storage",
    "TypeStats",
    "create_storage_tables",
    "drop_storage_tables",
    "normalize_url",
    "open_storage",
    "storage_metadata",
]


def normalize_url(url: str) -> str:
    """Map the URL spellings users paste to the async driver we run on.

    >>> normalize_url("postgres://u@h/db")
    'postgresql+asyncpg://u@h/db'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"malformed database URL {url!r}: expected scheme://...")
    scheme = {
        "postgres": "postgresql+asyncpg",
        "postgresql": "postgresql+asyncpg",
        "sqlite": "sqlite+aiosqlite",
    }.get(scheme, scheme)
    return f"{scheme}://{rest}"


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
