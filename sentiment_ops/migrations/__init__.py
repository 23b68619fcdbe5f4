"""Schema migrations of the inference store (Alembic, shipped inside the package).

Revisions live in ``versions/``: ``0001`` is the schema sentops 0.1.0 created with
``create_all``; each later one adds what a release adds. sentops runs them through
Alembic's API on a connection the store opened (and, on PostgreSQL, locked), so users
need no ``alembic.ini``.

The revision a store is at is kept in the table ``sentops_schema_version`` (not Alembic's
default ``alembic_version``, which MLflow's own schema uses: the two may share a database).
A store that holds the ``predictions`` table but no version table was made by sentops
0.1.0 and is at ``0001``."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa

VERSION_TABLE = "sentops_schema_version"
BASELINE = "0001"  # a store without a version table but with `predictions` is at this one
HERE = Path(__file__).resolve().parent


def _config(connection: Any) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


@cache
def revisions() -> tuple[str, ...]:
    """Every revision, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(HERE))
    return tuple(reversed([s.revision for s in script.walk_revisions()]))


def head() -> str:
    return revisions()[-1]


def current(connection: sa.Connection) -> str | None:
    """The revision the store's schema is at; None for an empty database."""
    inspector = sa.inspect(connection)
    if inspector.has_table(VERSION_TABLE):
        row = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).first()
        if row is not None:
            return str(row[0])
    if inspector.has_table("predictions"):
        return BASELINE
    return None


def stamp(connection: sa.Connection, revision: str) -> None:
    """Record ``revision`` without running anything (a store just created at head)."""
    from alembic import command

    command.stamp(_config(connection), revision)


def upgrade(connection: sa.Connection, to: str = "head") -> None:
    """Run every revision after the store's own up to ``to``; a store from before
    migrations is stamped ``0001`` first."""
    from alembic import command

    inspector = sa.inspect(connection)
    if not inspector.has_table(VERSION_TABLE) and inspector.has_table("predictions"):
        command.stamp(_config(connection), BASELINE)
    command.upgrade(_config(connection), to)
