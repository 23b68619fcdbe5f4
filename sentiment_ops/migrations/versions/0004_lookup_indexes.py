"""Indexes for what the store looks up: ``predictions.text_hash`` (feedback import and the
labeling queue: without it each lookup scans the table) and the labeled rows by time (a
partial index: retraining's read and the prune's count of kept rows).

Building them reads the whole table once and, on PostgreSQL, holds off writes to
``predictions`` until done (the migration runs in one transaction, where ``CREATE INDEX
CONCURRENTLY`` cannot): seconds per million rows (docs/benchmarks.md, "Store growth").

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LABELED = sa.text("feedback_label IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_predictions_text_hash", "predictions", ["text_hash"])
    op.create_index(
        "ix_predictions_labeled",
        "predictions",
        ["created_at", "id"],
        sqlite_where=LABELED,
        postgresql_where=LABELED,
    )


def downgrade() -> None:
    op.drop_index("ix_predictions_labeled", table_name="predictions")
    op.drop_index("ix_predictions_text_hash", table_name="predictions")
