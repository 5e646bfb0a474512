"""fastapi_objects storage tables, version 5.

Revision ID: a660ee736412
Revises: d4a8f2c6e9b5

Written by `objects init`. It calls the versioned DDL helpers, so it creates exactly the
version-5 tables whatever fastapi_objects release is installed later: this history stays frozen.
"""

from __future__ import annotations

from fastapi_objects.storage import create_storage_tables, drop_storage_tables

revision: str = "a660ee736412"
down_revision: str | None = "d4a8f2c6e9b5"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    create_storage_tables(version=5, schema=None)


def downgrade() -> None:
    drop_storage_tables(version=5, schema=None)
