"""fastapi_objects storage tables, version 3.

Revision ID: b7d2e4f6a8c1
Revises: 9c3e5b7d1a2f

Written by `objects init`. It calls the versioned DDL helpers, so it creates exactly the
version-3 tables whatever fastapi_objects release is installed later: this history stays frozen.
"""

from __future__ import annotations

from fastapi_objects.storage import create_storage_tables, drop_storage_tables

revision: str = "b7d2e4f6a8c1"
down_revision: str | None = "9c3e5b7d1a2f"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    create_storage_tables(version=3, schema=None)


def downgrade() -> None:
    drop_storage_tables(version=3, schema=None)
