"""Database URLs as users write them, mapped to the async drivers we run on."""

from __future__ import annotations


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
