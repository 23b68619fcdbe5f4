"""Alembic environment of the inference store. sentops runs it programmatically
(``sentiment_ops.migrations``) on a connection it opened and locked: no alembic.ini,
no URL here."""

from __future__ import annotations

from alembic import context

from sentiment_ops.migrations import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
