"""The inference store's database: its tables, URL forms, opening it (``Database``), its
schema revision (checked on open, ``upgrade_schema`` for ``sentops db upgrade``), and how
a SQLAlchemy failure becomes a ``StoreError``.

SQLAlchemy Core over SQLite (WAL, the default, in the sentops home) or PostgreSQL
(``postgresql+psycopg://user:pass@host/db``; a plain ``postgresql://`` or ``postgres://``
URL uses psycopg 3 when psycopg2 is not installed). Creating or migrating the tables is
serialised by an advisory lock so replicas that start together do not race.

The schema is versioned (``sentiment_ops.migrations``): an empty store is created at the
newest revision; a store at an older one is refused with a ``StoreSchemaError`` that names
``sentops db upgrade``, which ``upgrade_schema`` runs."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from sentiment_ops import migrations
from sentiment_ops.errors import StoreError, StoreRowError, StoreSchemaError, StoreUnavailableError, first_line
from sentiment_ops.paths import sqlite_file, sqlite_hint, writable_dir

metadata = sa.MetaData()

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.Integer, nullable=True),
    sa.Column("alias", sa.String(100), nullable=True),
    sa.Column("text", sa.Text, nullable=True),  # NULL when store_text is off
    sa.Column("text_hash", sa.String(64), nullable=False),
    sa.Column("prediction", sa.Integer, nullable=True),
    sa.Column("probability", sa.Float, nullable=True),  # P(positive) of a binary model
    sa.Column("confidence", sa.Float, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),
    sa.Column("embedding", sa.LargeBinary, nullable=True),  # float32 bytes
    sa.Column("source", sa.String(20), nullable=False, server_default="api"),  # api | import
    sa.Column("feedback_label", sa.Integer, nullable=True),
    sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True),
    # The embedding space: the serving backend (torch | onnx) that computed the embedding.
    # NULL for rows logged before sentops recorded it (unknown: drift leaves them out).
    sa.Column("backend", sa.String(20), nullable=True),
    # The X-Request-Id of the HTTP request that asked for it (one id on every row of a batch
    # request); NULL for rows from before, and for batch scoring and imports.
    sa.Column("request_id", sa.String(128), nullable=True),
    # Every class's probability, a JSON list in the model's class order; NULL for rows from
    # before, imports and rows whose model was not known.
    sa.Column("probabilities", sa.Text, nullable=True),
    sa.Index("ix_predictions_model", "model_name", "model_version", "created_at"),
    sa.Index("ix_predictions_request_id", "request_id"),
    # feedback import and the labeling queue look texts up by hash
    sa.Index("ix_predictions_text_hash", "text_hash"),
)
# The labeled rows, newest first (what retraining and the prune's count of kept rows read):
# partial, so it holds only the few labeled rows and costs the server's inserts nothing.
LABELED = predictions.c.feedback_label.is_not(None)
sa.Index(
    "ix_predictions_labeled",
    predictions.c.created_at,
    predictions.c.id,
    sqlite_where=LABELED,
    postgresql_where=LABELED,
)

# Rows the store refused (a PostgreSQL DataError or IntegrityError), kept instead of lost:
# ``payload`` is the row as JSON with ensure_ascii (a NUL is the escape \u0000), which any
# store holds.
dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("kind", sa.String(20), nullable=False),  # what the row was: prediction
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
)

drift_checks = sa.Table(
    "drift_checks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.Integer, nullable=True),
    sa.Column("window", sa.Integer, nullable=False),
    sa.Column("n_rows", sa.Integer, nullable=False),
    sa.Column("drift", sa.Boolean, nullable=False),
    sa.Column("p_value", sa.Float, nullable=True),
    sa.Column("mmd2", sa.Float, nullable=True),
    sa.Column("cosine_distance", sa.Float, nullable=True),
    sa.Column("details", sa.Text, nullable=True),  # JSON of the whole report
)


# Any fixed 64-bit key: taken (per transaction) while creating tables on PostgreSQL.
SCHEMA_LOCK_KEY = 0x5E4701

POSTGRES_DRIVER_HINT = "use a postgresql+psycopg:// URL and pip install 'sentiment-ops[postgres]'"


def normalize_url(url: str) -> str:
    """The SQLAlchemy URL to connect with. ``postgres://`` (the form many hosts hand out)
    becomes ``postgresql://``, and a driverless ``postgresql://`` picks psycopg 3 when
    psycopg2 (SQLAlchemy's default driver for it) is not installed. Other URLs are kept."""
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return url  # create_engine reports it
    driver = parsed.drivername
    if driver == "postgres":
        driver = "postgresql"
    if driver == "postgresql" and not _importable("psycopg2") and _importable("psycopg"):
        driver = "postgresql+psycopg"
    if driver == parsed.drivername:
        return url
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """An aware UTC datetime (SQLite hands back naive ones)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Database:
    """One engine on the store, its schema checked (or created) on open. Thread-safe (one
    engine, short transactions); safe to share across threads. The store's parts
    (``PredictionLog``, ``FeedbackLabels``, ``DriftLog``) are this plus their reads and writes."""

    def __init__(self, url: str, store_text: bool = True, create: bool = True) -> None:
        self.url = normalize_url(url)
        self.store_text = store_text
        self._sqlite_path = sqlite_path = sqlite_file(self.url)
        if sqlite_path is not None:
            # a folder that cannot be written is one line naming it (StoreError), not
            # SQLite's "unable to open database file"
            writable_dir(sqlite_path.parent, "folder of the inference store")
        try:
            if self.url.startswith("sqlite"):
                self.engine = sa.create_engine(self.url, connect_args={"timeout": 30, "check_same_thread": False})
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            else:
                # pre-ping: a pooled connection that died with a restarted server is replaced
                # at checkout; connect_timeout: an unreachable host fails in seconds, not minutes
                args = {"connect_timeout": 10} if self.url.startswith("postgresql") else {}
                self.engine = sa.create_engine(self.url, pool_pre_ping=True, connect_args=args)
            if create:
                self._prepare_schema()
        except StoreError:
            self.engine.dispose()
            raise
        except ImportError as exc:
            hint = f" ({POSTGRES_DRIVER_HINT})" if self.url.startswith("postgres") else ""
            raise StoreError(f"cannot open inference store {self.display_url}: {first_line(exc)}{hint}") from exc
        except (SQLAlchemyError, ValueError, OSError) as exc:
            raise StoreError(
                f"cannot open inference store {self.display_url}: {first_line(exc)}{self._hint()}"
            ) from exc

    def _hint(self) -> str:
        """For a SQLite store: which file, and what to do about it."""
        path = self._sqlite_path
        if path is None:
            return ""
        return f" ({path} must be a SQLite file this process can read and write: {sqlite_hint(path)})"

    def _prepare_schema(self) -> None:
        """Create an empty store at the newest revision; refuse one at another revision."""
        with self.engine.begin() as conn:
            _schema_lock(conn)
            at = migrations.current(conn)
            if at is None:
                _create_at_head(conn)
                return
        self._check_revision(at)

    def _check_revision(self, at: str) -> None:
        need = migrations.head()
        if at == need:
            return
        if at in migrations.revisions():
            raise StoreSchemaError(
                f"inference store {self.display_url} is at schema {at}, this sentops needs {need}: "
                "run `sentops db upgrade`"
            )
        raise StoreSchemaError(
            f"inference store {self.display_url} is at schema {at}, newer than this sentops knows "
            f"(it needs {need}): upgrade sentops"
        )

    def schema_revision(self) -> str | None:
        """The revision the store is at (None: an empty database)."""
        try:
            with self.engine.connect() as conn:
                return migrations.current(conn)
        except SQLAlchemyError as exc:
            raise store_error(f"cannot read inference store {self.display_url}{self._hint()}", exc) from exc

    def upgrade_schema(self) -> tuple[str | None, str]:
        """Bring the store to the newest revision (an empty one is created there), in one
        transaction under the schema lock. Returns (revision before, revision after)."""
        try:
            with self.engine.begin() as conn:
                _schema_lock(conn)
                before = migrations.current(conn)
                if before is None:
                    _create_at_head(conn)
                elif before not in migrations.revisions():
                    self._check_revision(before)
                elif before != migrations.head():
                    migrations.upgrade(conn)
        except SQLAlchemyError as exc:
            raise store_error(f"cannot upgrade inference store {self.display_url}{self._hint()}", exc) from exc
        return before, migrations.head()

    @property
    def display_url(self) -> str:
        """The URL without its password."""
        try:
            return sa.engine.make_url(self.url).render_as_string(hide_password=True)
        except (sa.exc.ArgumentError, ValueError):
            return "<invalid url>"

    def close(self) -> None:
        self.engine.dispose()

    def _select(self, query: Any) -> list[Any]:
        """The rows of one read; a failure is a ``StoreError`` (see ``store_error``)."""
        try:
            with self.engine.connect() as conn:
                return list(conn.execute(query))
        except SQLAlchemyError as exc:
            raise store_error("cannot read inference store", exc) from exc

    def _select_dicts(self, query: Any) -> list[dict[str, Any]]:
        """``_select`` as plain dicts, ``created_at`` as an aware UTC datetime."""
        out = []
        for r in self._select(query):
            d = dict(r._mapping)
            d["created_at"] = as_utc(d["created_at"])
            out.append(d)
        return out


def _schema_lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        # two processes running CREATE TABLE at once collide in the catalog; a replica
        # that starts during `sentops db upgrade` waits for it
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})


def _create_at_head(conn: sa.Connection) -> None:
    """An empty database becomes a store at the newest revision (not a migration)."""
    metadata.create_all(conn)
    migrations.stamp(conn, migrations.head())


def store_error(what: str, exc: SQLAlchemyError) -> StoreError:
    """A row the store refuses (its data: DataError, IntegrityError, a value the driver
    cannot send) → StoreRowError; anything else (connection refused or lost, a missing
    table, a timeout) → StoreUnavailableError: the same write may work later."""
    message = f"{what}: {first_line(exc)}"
    invalidated = isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated
    if not invalidated and isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError):
        return StoreRowError(message)
    if isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError):
        return StoreRowError(message)  # SQLAlchemy could not bind a value
    return StoreUnavailableError(message)


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers (drift, retrain) never block the server
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
