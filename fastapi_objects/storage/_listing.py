"""Listings of stored objects, with the status they are in now.

An object is ``active`` while a node holds it (its owner row names a node) and otherwise
what its creation (``active``) or its last hibernation (``hibernated``, written with the
release of its owner) stored. So neither a thaw nor a commit writes a status: the claim that
any thaw makes already says the object is live, and every commit is fenced by it (a status
hint per thawed object cost a PostgreSQL thaw storm a fifth of its CPU; ``status = 'active'``
in every commit made SQLite rewrite the status index for each committed row).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ._rows import to_utc
from .base import ObjectQuery, decode_cursor

HELD = "active"


def listed_status(stored: str, owner: str | None) -> str:
    """The status a listing shows: ``active`` while a node holds the object."""
    return HELD if owner is not None else stored


class SQLListing:
    """The statements that read checkpoints with their status (load, query, stats)."""

    def __init__(self, checkpoints: sa.Table, owners: sa.Table) -> None:
        cp, o = checkpoints, owners
        self.checkpoints = cp
        # A literal, not a parameter: PostgreSQL groups by the expression, written twice.
        self.status = sa.case(
            (o.c.node_id.is_not(None), sa.literal_column(f"'{HELD}'")), else_=cp.c.status
        )
        self._from = cp.outerjoin(o, sa.and_(o.c.type == cp.c.type, o.c.key == cp.c.key))
        self._columns = [
            self.status.label(c.name) if c.name == "status" else c for c in cp.c
        ]

    def load(self, type: str, key: str) -> sa.Select[Any]:
        """The checkpoint of ``(type, key)``."""
        cp = self.checkpoints
        return self._select().where(cp.c.type == type, cp.c.key == key)

    def query(self, query: ObjectQuery) -> sa.Select[Any]:
        """The checkpoints ``query`` asks for, one more than its limit (is there a next page?)."""
        cp, status = self.checkpoints, self.status
        stmt = self._select().order_by(cp.c.type, cp.c.key).limit(query.limit + 1)
        if query.type is not None:
            stmt = stmt.where(cp.c.type == query.type)
        if query.status is not None:
            stmt = stmt.where(status == query.status)
        if query.status_in is not None:
            stmt = stmt.where(status.in_(query.status_in))
        if query.key_prefix:
            stmt = stmt.where(
                cp.c.key >= query.key_prefix, cp.c.key < query.key_prefix + "\U0010ffff"
            )
        if query.state_version is not None:
            stmt = stmt.where(cp.c.state_version == query.state_version)
        if query.updated_after is not None:
            stmt = stmt.where(cp.c.updated_at > to_utc(query.updated_after))
        if query.updated_before is not None:
            stmt = stmt.where(cp.c.updated_at < to_utc(query.updated_before))
        if query.cursor is not None:
            after_type, after_key = decode_cursor(query.cursor)
            stmt = stmt.where(sa.tuple_(cp.c.type, cp.c.key) > sa.tuple_(after_type, after_key))
        return stmt

    def stats(self) -> sa.Select[Any]:
        """How many objects each type has in each status."""
        cp, status = self.checkpoints, self.status
        return (
            sa.select(cp.c.type, status, sa.func.count()).select_from(self._from)
            .group_by(cp.c.type, status).order_by(cp.c.type, status)
        )

    def _select(self) -> sa.Select[Any]:
        return sa.select(*self._columns).select_from(self._from)
