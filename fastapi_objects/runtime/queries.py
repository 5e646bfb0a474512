"""Checking the arguments of ``objects.query`` before they reach storage (``InvalidQuery``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from .._exceptions import InvalidQuery
from ..storage import STATUSES, ObjectQuery, decode_cursor
from .keys import validate_key_prefix


def object_query(
    type_name: str | None,
    *,
    status: str | None,
    status_in: Sequence[str] | None,
    key_prefix: str | None,
    state_version: int | None,
    updated_after: datetime | None,
    updated_before: datetime | None,
    limit: int,
    cursor: str | None,
) -> ObjectQuery:
    """The ``ObjectQuery`` these arguments describe; ``InvalidQuery`` names a bad one."""
    if key_prefix:
        validate_key_prefix(key_prefix)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise InvalidQuery(f"limit must be a whole number from 1 to 10000, got {limit!r}")
    for value in (status, *(status_in or ())):
        if value is not None and value not in STATUSES:
            raise InvalidQuery(f"status must be one of {', '.join(STATUSES)}, got {value!r}")
    if cursor is not None:
        try:
            decode_cursor(cursor)
        except ValueError:
            raise InvalidQuery(
                f"malformed cursor {cursor[:80]!r}: pass back a page's next_cursor unchanged"
            ) from None
    return ObjectQuery(
        type=type_name, status=status,
        status_in=tuple(status_in) if status_in is not None else None,
        key_prefix=key_prefix, state_version=state_version, updated_after=updated_after,
        updated_before=updated_before, limit=limit, cursor=cursor,
    )
