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


def redact(url: str) -> str:
    """``url`` with its password hidden, for logs, errors and CLI output."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL (memory://name, redis://...)
        head, sep, tail = url.rpartition("@")
        if not sep or "://" not in head:
            return url
        scheme, _, userinfo = head.partition("://")
        user = userinfo.split(":", 1)[0]
        return f"{scheme}://{user}:***@{tail}"
