"""The inference store as sentops 0.1.0 made it (``create_all``, before migrations).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.Integer, nullable=True),
        sa.Column("alias", sa.String(100), nullable=True),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("text_hash", sa.String(64), nullable=False),
        sa.Column("prediction", sa.Integer, nullable=True),
        sa.Column("probability", sa.Float, nullable=True),
        sa.Column("confidence", sa.Float, nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("embedding", sa.LargeBinary, nullable=True),
        sa.Column("source", sa.String(20), nullable=False, server_default="api"),
        sa.Column("feedback_label", sa.Integer, nullable=True),
        sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_index("ix_predictions_model", "predictions", ["model_name", "model_version", "created_at"])
    op.create_table(
        "drift_checks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.Integer, nullable=True),
        sa.Column("window", sa.Integer, nullable=False),
        sa.Column("n_rows", sa.Integer, nullable=False),
        sa.Column("drift", sa.Boolean, nullable=False),
        sa.Column("p_value", sa.Float, nullable=True),
        sa.Column("mmd2", sa.Float, nullable=True),
        sa.Column("cosine_distance", sa.Float, nullable=True),
        sa.Column("details", sa.Text, nullable=True),
    )
    op.create_index("ix_drift_checks_created_at", "drift_checks", ["created_at"])


def downgrade() -> None:
    op.drop_table("drift_checks")
    op.drop_table("predictions")
