"""What every node of a cluster shares in ``objects_cluster`` (storage tables version 4).

One value today: the secret that signs calls between nodes when ``OBJECTS_CLUSTER_SECRET`` is
not set. The first node to ask makes it at random; every other node sharing the database
reads the same one. Only those who can read the database know it, and they could change the
data anyway: a secret derived from the database URL (what it was before) anyone can compute.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

SECRET = "secret"


def cluster_secret(conn: sa.Connection, table: sa.Table, postgres: bool) -> str:
    """The cluster's secret, made now if no node made it yet (one transaction)."""
    insert = postgresql.insert if postgres else sqlite.insert
    conn.execute(
        insert(table)
        .values(name=SECRET, value=secrets.token_hex(32), created_at=datetime.now(UTC))
        .on_conflict_do_nothing(index_elements=[table.c.name])
    )
    # A node that lost the race waited for the winner's commit; this statement sees it.
    return str(conn.execute(sa.select(table.c.value).where(table.c.name == SECRET)).scalar_one())
