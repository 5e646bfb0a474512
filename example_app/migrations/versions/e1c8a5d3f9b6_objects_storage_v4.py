"""fastapi_objects storage tables, version 4.

Revision ID: e1c8a5d3f9b6
Revises: b7d2e4f6a8c1

Written by `objects init`. It calls the versioned DDL helpers, so it creates exactly the
version-4 tables whatever fastapi_objects release is installed later: this history stays frozen.
"""

from __future__ import annotations

from fastapi_objects.storage import create_storage_tables, drop_storage_tables

revision: str = "e1c8a5d3f9b6"
down_revision: str | None = "b7d2e4f6a8c1"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    create_storage_tables(version=4, schema=None)


def downgrade() -> None:
    drop_storage_tables(version=4, schema=None)
