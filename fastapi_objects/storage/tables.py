"""Versioned DDL of the storage tables.

A user's Alembic migration calls ``create_storage_tables(version=1)``; the version-1 tables are
frozen here forever, so the user's history never changes under them when the library moves on.
A later version adds tables (``_VERSIONS[n]``) or columns of earlier tables (``_COLUMNS[n]``),
and a new user migration calls ``create_storage_tables(version=n)`` on top of the old one.

Example (an Alembic revision)::

    from fastapi_objects.storage import create_storage_tables, drop_storage_tables

    def upgrade() -> None:
        create_storage_tables(version=1, schema=None)

    def downgrade() -> None:
        drop_storage_tables(version=1, schema=None)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

LATEST_VERSION = 5
PREFIX = "objects_"


def json_type() -> sa.types.TypeEngine[Any]:
    """JSON everywhere, JSONB on PostgreSQL."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _key_type() -> sa.types.TypeEngine[str]:
    # Bytewise ("C") ordering on PostgreSQL, as SQLite's BINARY default and Python's str order:
    # key-prefix scans and cursors then agree on every backend and can use the primary key.
    return sa.String(256).with_variant(postgresql.VARCHAR(256, collation="C"), "postgresql")


def _v1(metadata: sa.MetaData) -> list[sa.Table]:
    checkpoints = sa.Table(
        PREFIX + "checkpoints",
        metadata,
        sa.Column("type", sa.String(64), primary_key=True),
        sa.Column("key", _key_type(), primary_key=True),
        sa.Column("rev", sa.BigInteger(), nullable=False),
        sa.Column("journal_rev", sa.BigInteger(), nullable=False),
        sa.Column("snapshot_rev", sa.BigInteger(), nullable=False),
        sa.Column("state", json_type(), nullable=True),
        sa.Column("state_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("metadata", json_type(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        # No index on updated_at (or rev, or state): every commit changes those, and an indexed
        # column that changes rules out PostgreSQL's HOT updates (in-page, no index writes).
        # status stays "active" across commits, so this index does not. The fill factor leaves
        # room in each page for the new row versions.
        sa.Index("ix_objects_checkpoints_status", "type", "status", "key"),
        postgresql_with={"fillfactor": "70"},
    )
    journal = sa.Table(
        PREFIX + "journal",
        metadata,
        sa.Column("type", sa.String(64), primary_key=True),
        sa.Column("key", _key_type(), primary_key=True),
        sa.Column("rev", sa.BigInteger(), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", json_type(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    # Pub/sub payloads too large for a PostgreSQL NOTIFY (8,000 bytes): the NOTIFY carries the id.
    pubsub = sa.Table(
        PREFIX + "pubsub",
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("topic", sa.String(512), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index("ix_objects_pubsub_created", "created_at"),
    )
    return [checkpoints, journal, pubsub]


def _v2(metadata: sa.MetaData) -> list[sa.Table]:
    # Liveness is one row per node (heartbeats are O(nodes) writes); ownership is one row per
    # object ever activated, written on claim and release only, never per call.
    nodes = sa.Table(
        PREFIX + "nodes",
        metadata,
        sa.Column("node_id", sa.String(64), primary_key=True),
        sa.Column("address", sa.String(512), nullable=True),
        sa.Column("region", sa.String(64), nullable=True),
        sa.Column("machine", sa.String(64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )
    owners = sa.Table(
        PREFIX + "owners",
        metadata,
        sa.Column("type", sa.String(64), primary_key=True),
        sa.Column("key", _key_type(), primary_key=True),
        sa.Column("node_id", sa.String(64), nullable=True),  # NULL: released
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        # Who held it before the last claim while still owning it (a takeover), else NULL.
        sa.Column("previous_node_id", sa.String(64), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index("ix_objects_owners_node", "node_id"),
    )
    return [nodes, owners]


def _v3(metadata: sa.MetaData) -> list[sa.Table]:
    # Durable per-object wake-ups, several per object (by name). Written with the turn that
    # sets, cancels or completes them; polled by due time for objects nobody holds.
    alarms = sa.Table(
        PREFIX + "alarms",
        metadata,
        sa.Column("type", sa.String(64), primary_key=True),
        sa.Column("key", _key_type(), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", json_type(), nullable=True),
        sa.Column("every", sa.Float(), nullable=True),
        sa.Column("cron", sa.String(128), nullable=True),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Index("ix_objects_alarms_due", "status", "due_at"),
    )
    return [alarms]


def _v4(metadata: sa.MetaData) -> list[sa.Table]:
    # Values every node of the cluster shares and only the app can read: the random secret
    # that signs calls between nodes when OBJECTS_CLUSTER_SECRET is not set.
    cluster = sa.Table(
        PREFIX + "cluster",
        metadata,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    return [cluster]


def _v4_columns() -> dict[str, list[sa.Column[Any]]]:
    # The node's process, as another process of its machine checks it (cluster/death.py): a
    # crashed node is taken over at once by a node that proves it dead, not after node_ttl.
    return {PREFIX + "nodes": [
        sa.Column("boot_id", sa.String(64), nullable=True),
        sa.Column("pid_namespace", sa.BigInteger(), nullable=True),
        sa.Column("pid", sa.BigInteger(), nullable=True),
        sa.Column("pid_started", sa.BigInteger(), nullable=True),
    ]}


def _v5(metadata: sa.MetaData) -> list[sa.Table]:
    # Kept states, for restore: a row per commit that wrote the state of an object whose class
    # sets `history`, written with the commit, pruned once older than the class's window.
    # Objects without the option write nothing here.
    history = sa.Table(
        PREFIX + "history",
        metadata,
        sa.Column("type", sa.String(64), primary_key=True),
        sa.Column("key", _key_type(), primary_key=True),
        sa.Column("rev", sa.BigInteger(), primary_key=True),
        sa.Column("state", json_type(), nullable=False),
        sa.Column("state_version", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Index("ix_objects_history_at", "type", "at"),  # pruning, and restore by time
    )
    return [history]


_VERSIONS: dict[int, Callable[[sa.MetaData], list[sa.Table]]] = {
    1: _v1, 2: _v2, 3: _v3, 4: _v4, 5: _v5,
}
_COLUMNS: dict[int, Callable[[], dict[str, list[sa.Column[Any]]]]] = {4: _v4_columns}
"""Columns a version adds to the tables of earlier versions, by table name."""


def storage_metadata(schema: str | None = None, version: int = LATEST_VERSION) -> sa.MetaData:
    """Return a ``MetaData`` holding every storage table up to ``version``.

    Point Alembic's ``target_metadata`` at it (together with the app's own) so that
    ``alembic check`` proves the migration and the runtime agree.
    """
    _check_version(version)
    metadata = sa.MetaData(schema=schema)
    for v in range(1, version + 1):
        _VERSIONS[v](metadata)
        for name, columns in _added(v):
            table = metadata.tables[f"{schema}.{name}" if schema else name]
            for column in columns:
                table.append_column(column)
    return metadata


def _added(version: int) -> list[tuple[str, list[sa.Column[Any]]]]:
    columns = _COLUMNS.get(version)
    return [] if columns is None else list(columns().items())


def add_missing_columns(conn: sa.Connection, metadata: sa.MetaData) -> None:
    """Add the columns later versions gave to existing tables (``create_all`` adds none).

    What the runtime's ``create_tables`` and ``objects migrate`` without Alembic run after
    creating the missing tables, so a database created by an older release is brought up to
    date as a migration would.
    """
    inspector = sa.inspect(conn)
    schema = metadata.schema
    for version in sorted(_COLUMNS):
        for name, columns in _added(version):
            table = metadata.tables[f"{schema}.{name}" if schema else name]
            present = {c["name"] for c in inspector.get_columns(name, schema=schema)}
            quoted = conn.dialect.identifier_preparer.format_table(table)
            for column in columns:
                if column.name not in present:
                    spec = sa.schema.CreateColumn(table.c[column.name]).compile(conn)
                    conn.execute(sa.text(f"ALTER TABLE {quoted} ADD COLUMN {spec}"))


def create_storage_tables(version: int = 1, schema: str | None = None) -> None:
    """Create the tables (and columns) ``version`` adds, inside an Alembic migration (``op``).

    Works online and in offline (``--sql``) mode. Each version only adds what the previous
    versions did not have, so call it once per version, in order.
    """
    from alembic import op

    _check_version(version)
    for table in _VERSIONS[version](sa.MetaData(schema=schema)):
        columns = [column._copy() for column in table.columns]
        op.create_table(table.name, *columns, schema=schema, **table.kwargs)
        for index in table.indexes:
            op.create_index(
                index.name or "",
                table.name,
                [column.name for column in index.columns],
                schema=schema,
            )
    for name, added in _added(version):
        for column in added:
            op.add_column(name, column, schema=schema)


def drop_storage_tables(version: int = 1, schema: str | None = None) -> None:
    """Drop the tables and columns that ``version`` added (for an Alembic ``downgrade``)."""
    from alembic import op

    _check_version(version)
    for name, added in _added(version):
        for column in reversed(added):
            op.drop_column(name, column.name, schema=schema)
    for table in reversed(_VERSIONS[version](sa.MetaData(schema=schema))):
        op.drop_table(table.name, schema=schema)


def _check_version(version: int) -> None:
    if version not in _VERSIONS:
        known = ", ".join(str(v) for v in sorted(_VERSIONS))
        raise ValueError(f"unknown storage table version {version}; known versions: {known}")
