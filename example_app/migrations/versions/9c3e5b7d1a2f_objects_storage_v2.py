"""fastapi_objects storage tables, version 2.

Revision ID: 9c3e5b7d1a2f
Revises: 4f2a9c1e7b3d

Written by `objects init`. It calls the versioned DDL helpers, so it creates exactly the
version-2 tables whatever fastapi_objects release is installed later: this history stays frozen.
"""

from __future__ import annotations

from fastapi_objects.storage import create_storage_tables, drop_storage_tables

revision: str = "9c3e5b7d1a2f"
down_revision: str | None = "4f2a9c1e7b3d"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    create_storage_tables(version=2, schema=None)


def downgrade() -> None:
    drop_storage_tables(version=2, schema=None)
