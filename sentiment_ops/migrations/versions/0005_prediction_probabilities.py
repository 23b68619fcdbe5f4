"""Every class's probability of each served prediction (``predictions.probabilities``: a
JSON list in the model's class order), for models with more than two classes, where
``probability`` (P(positive)) is NULL.

Rows from before keep ``probabilities`` NULL.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a nullable column with no default: a catalog-only change on PostgreSQL (no table
    # rewrite), an ALTER TABLE ADD COLUMN on SQLite
    op.add_column("predictions", sa.Column("probabilities", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("predictions", "probabilities")
