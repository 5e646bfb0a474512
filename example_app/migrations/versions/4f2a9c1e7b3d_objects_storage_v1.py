"""fastapi_objects storage tables, version 1.

Revision ID: 4f2a9c1e7b3d
Revises:

Written by `objects init`. It calls the versioned DDL helpers, so it creates exactly the
version-1 tables whatever fastapi_objects release is installed later: this history stays frozen.
"""

from __future__ import annotations

from fastapi_objects.storage import create_storage_tables, drop_storage_tables

revision: str = "4f2a9c1e7b3d"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    create_storage_tables(version=1, schema=None)


def downgrade() -> None:
    drop_storage_tables(version=1, schema=None)
