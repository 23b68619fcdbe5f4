"""The HTTP request each served prediction came from (``predictions.request_id``: the
``X-Request-Id`` the client sent or the server made up), indexed, so a client's complaint
can be traced to its rows.

Rows from before keep ``request_id`` NULL.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a nullable column with no default: a catalog-only change on PostgreSQL (no table
    # rewrite), an ALTER TABLE ADD COLUMN on SQLite
    op.add_column("predictions", sa.Column("request_id", sa.String(128), nullable=True))
    op.create_index("ix_predictions_request_id", "predictions", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_predictions_request_id", table_name="predictions")
    op.drop_column("predictions", "request_id")
