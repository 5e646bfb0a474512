"""Rows read back into the storage's records, whichever driver read them.

SQLAlchemy's rows (``row._mapping``) and asyncpg's records (read on the writer's own
connections, ``_thaw_pg.py``) are both looked up by column name; ``decode`` turns a JSON
column's value into Python (asyncpg hands ``jsonb`` over as text, SQLAlchemy decodes it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .base import Alarm, Checkpoint

Decode = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC time (SQLite gives naive ones, stored as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC, a naive one taken as UTC: how times are compared with stored ones.

    SQLite stores times as UTC text and drops a parameter's offset, so compare in UTC.
    """
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def checkpoint_of(m: Any, decode: Decode = _same) -> Checkpoint:
    """The checkpoint in row ``m`` (a mapping of column names)."""
    return Checkpoint(
        type=m["type"], key=m["key"], rev=m["rev"], journal_rev=m["journal_rev"],
        snapshot_rev=m["snapshot_rev"], state=decode(m["state"]),
        state_version=m["state_version"], status=m["status"], metadata=decode(m["metadata"]),
        created_at=utc(m["created_at"]), updated_at=utc(m["updated_at"]),
    )


def alarm_of(m: Any, decode: Decode = _same) -> Alarm:
    """The alarm in row ``m`` (a mapping of column names)."""
    return Alarm(
        type=m["type"], key=m["key"], name=m["name"], due_at=utc(m["due_at"]),
        scheduled_at=utc(m["scheduled_at"]), payload=decode(m["payload"]), every=m["every"],
        cron=m["cron"], retry_count=m["retry_count"], status=m["status"],
        last_error=m["last_error"],
    )
