"""The inference store: every served prediction (with its pooled embedding), feedback
labels, and drift checks. SQLAlchemy Core over SQLite (WAL, the default, in the sentops
home) or PostgreSQL (``postgresql+psycopg://user:pass@host/db``; a plain ``postgresql://``
or ``postgres://`` URL uses psycopg 3 when psycopg2 is not installed).

Several processes may share one PostgreSQL store (API replicas, drift, retrain): every row
has a random id, writes are single short transactions, and creating or migrating the
tables is serialised by an advisory lock so replicas that start together do not race.

The schema is versioned (``sentiment_ops.migrations``): an empty store is created at the
newest revision; a store at an older one is refused with a ``StoreSchemaError`` that names
``sentops db upgrade``, which ``upgrade_schema`` runs.

Errors say what to do next: ``StoreUnavailableError`` (the store cannot be reached: retry),
``StoreRowError`` (the store refused a row's data: retrying cannot help)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from sentiment_ops import migrations
from sentiment_ops.errors import (
    DataError,
    NotFoundError,
    StoreError,
    StoreRowError,
    StoreSchemaError,
    StoreUnavailableError,
)
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
    sa.Column("probability", sa.Float, nullable=True),  # P(positive)
    sa.Column("confidence", sa.Float, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),
    sa.Column("embedding", sa.LargeBinary, nullable=True),  # float32 bytes
    sa.Column("source", sa.String(20), nullable=False, server_default="api"),  # api | import
    sa.Column("feedback_label", sa.Integer, nullable=True),
    sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True),
    # The embedding space: the serving backend (torch | onnx) that computed the embedding.
    # NULL for rows logged before sentops recorded it (unknown: drift leaves them out).
    sa.Column("backend", sa.String(20), nullable=True),
    sa.Index("ix_predictions_model", "model_name", "model_version", "created_at"),
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


# C0 controls and DEL, except tab, newline and carriage return. C1 controls (U+0080-U+009F)
# are allowed: they are real client text, Windows-1252 punctuation decoded as Latin-1
# ("…" as U+0085, the en dash as U+0096): 865 of the 33,530 bundled IMDB / Rotten Tomatoes texts
# hold one, and PostgreSQL stores them.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def text_problem(text: str) -> str | None:
    """Why the store cannot hold ``text`` as it is, or None: the one text rule of every way
    in (``/predict``, ``/predict/batch``, ``/invocations``, ``sentops feedback import``).

    C0 control characters (U+0000-U+001F) other than tab, newline and carriage return, and
    DEL (U+007F), are refused (PostgreSQL cannot store U+0000 in a text column, and the
    others are terminal codes, never sentiment), and so are lone surrogates (not encodable
    as UTF-8). C1 controls pass: mis-decoded Windows-1252 punctuation is common in real text."""
    found = _CONTROL.search(text)
    if found is not None:
        return (
            f"text holds the control character U+{ord(found.group()):04X} at position {found.start()} "
            "(only tab, newline and carriage return are allowed)"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"text holds a lone surrogate U+{ord(text[exc.start]):04X} at position {exc.start} (not valid Unicode)"
    return None


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class PredictionRecord:
    model_name: str
    model_version: int | None
    text: str
    prediction: int | None
    probability: float | None
    confidence: float | None
    embedding: np.ndarray | None = None
    latency_ms: float | None = None
    alias: str | None = None
    source: str = "api"
    backend: str | None = None  # the serving backend that computed the embedding
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)
    feedback_label: int | None = None
    feedback_at: datetime | None = None


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class InferenceStore:
    """Thread-safe (one engine, short transactions); safe to share across threads."""

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
            raise StoreError(f"cannot open inference store {self._safe_url()}: {_first_line(exc)}{hint}") from exc
        except (SQLAlchemyError, ValueError, OSError) as exc:
            raise StoreError(
                f"cannot open inference store {self._safe_url()}: {_first_line(exc)}{self._hint()}"
            ) from exc

    def _hint(self) -> str:
        """For a SQLite store: which file, and what to do about it."""
        path = self._sqlite_path
        if path is None:
            return ""
        return f" ({path} must be a SQLite file this process can read and write: {sqlite_hint(path)})"

    def _locked(self, conn: sa.Connection) -> None:
        if conn.dialect.name == "postgresql":
            # two processes running CREATE TABLE at once collide in the catalog; a replica
            # that starts during `sentops db upgrade` waits for it
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})

    def _prepare_schema(self) -> None:
        """Create an empty store at the newest revision; refuse one at another revision."""
        with self.engine.begin() as conn:
            self._locked(conn)
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
                f"inference store {self._safe_url()} is at schema {at}, this sentops needs {need}: "
                "run `sentops db upgrade`"
            )
        raise StoreSchemaError(
            f"inference store {self._safe_url()} is at schema {at}, newer than this sentops knows "
            f"(it needs {need}): upgrade sentops"
        )

    def schema_revision(self) -> str | None:
        """The revision the store is at (None: an empty database)."""
        try:
            with self.engine.connect() as conn:
                return migrations.current(conn)
        except SQLAlchemyError as exc:
            raise _store_error(f"cannot read inference store {self._safe_url()}{self._hint()}", exc) from exc

    def upgrade_schema(self) -> tuple[str | None, str]:
        """Bring the store to the newest revision (an empty one is created there), in one
        transaction under the schema lock. Returns (revision before, revision after)."""
        try:
            with self.engine.begin() as conn:
                self._locked(conn)
                before = migrations.current(conn)
                if before is None:
                    _create_at_head(conn)
                elif before not in migrations.revisions():
                    self._check_revision(before)
                elif before != migrations.head():
                    migrations.upgrade(conn)
        except SQLAlchemyError as exc:
            raise _store_error(f"cannot upgrade inference store {self._safe_url()}{self._hint()}", exc) from exc
        return before, migrations.head()

    @property
    def display_url(self) -> str:
        """The URL without its password."""
        return self._safe_url()

    def _safe_url(self) -> str:
        try:
            return sa.engine.make_url(self.url).render_as_string(hide_password=True)
        except (sa.exc.ArgumentError, ValueError):
            return "<invalid url>"

    def close(self) -> None:
        self.engine.dispose()

    # -- writes ---------------------------------------------------------------------------
    def add_predictions(self, records: Sequence[PredictionRecord], skip_existing: bool = False) -> int:
        """Insert rows in one transaction. ``skip_existing``: a row whose id is already
        stored is skipped instead of refused (a write retried after a commit whose answer
        was lost with the connection). Raises StoreRowError when the store refuses the
        data of a row, StoreUnavailableError when it cannot be reached."""
        if not records:
            return 0
        try:
            rows = self._rows_of(records)
        except (ValueError, TypeError, UnicodeError) as exc:
            raise StoreRowError(f"cannot write to inference store: {_first_line(exc)}") from exc
        insert: Any = predictions.insert()
        if skip_existing and self.engine.dialect.name in ("postgresql", "sqlite"):
            dialect = importlib.import_module(f"sqlalchemy.dialects.{self.engine.dialect.name}")
            insert = dialect.insert(predictions).on_conflict_do_nothing(index_elements=["id"])
        try:
            with self.engine.begin() as conn:
                conn.execute(insert, rows)
        except SQLAlchemyError as exc:
            raise _store_error("cannot write to inference store", exc) from exc
        return len(rows)

    def _rows_of(self, records: Sequence[PredictionRecord]) -> list[dict[str, Any]]:
        return [
            {
                "id": r.id,
                "created_at": _as_utc(r.created_at),
                "model_name": r.model_name,
                "model_version": r.model_version,
                "alias": r.alias,
                "text": r.text if self.store_text else None,
                "text_hash": text_hash(r.text),
                "prediction": r.prediction,
                "probability": r.probability,
                "confidence": r.confidence,
                "latency_ms": r.latency_ms,
                "embedding": None if r.embedding is None else np.asarray(r.embedding, dtype=np.float32).tobytes(),
                "source": r.source,
                "feedback_label": r.feedback_label,
                "feedback_at": _as_utc(r.feedback_at),
                "backend": r.backend,
            }
            for r in records
        ]

    def add_dead_letters(self, letters: Sequence[tuple[str, str, str]]) -> int:
        """Keep refused rows: ``(kind, error, payload)`` each (see ``dead_letter``)."""
        if not letters:
            return 0
        now = utcnow()
        rows = [
            {"id": new_id(), "created_at": now, "kind": kind, "error": _storable(error), "payload": _storable(payload)}
            for kind, error, payload in letters
        ]
        try:
            with self.engine.begin() as conn:
                conn.execute(dead_letters.insert(), rows)
        except SQLAlchemyError as exc:
            raise _store_error("cannot write dead letters", exc) from exc
        return len(rows)

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent refused rows, newest first."""
        q = sa.select(dead_letters).order_by(dead_letters.c.created_at.desc()).limit(limit)
        out = []
        for r in self._rows(q):
            d = dict(r._mapping)
            d["created_at"] = _as_utc(d["created_at"])
            out.append(d)
        return out

    def set_feedback(self, prediction_id: str, label: int) -> bool:
        """Record the true label of a logged prediction. Returns False when that same
        label was already recorded (nothing applied twice)."""
        if label not in (0, 1):
            raise DataError(f"label must be 0 or 1, got {label!r}")
        try:
            with self.engine.begin() as conn:
                row = conn.execute(
                    sa.select(predictions.c.feedback_label).where(predictions.c.id == prediction_id)
                ).first()
                if row is None:
                    raise NotFoundError(f"no logged prediction with id {prediction_id!r}")
                if row.feedback_label == label:
                    return False
                conn.execute(
                    predictions.update()
                    .where(predictions.c.id == prediction_id)
                    .values(feedback_label=label, feedback_at=utcnow())
                )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write feedback: {_first_line(exc)}") from exc
        return True

    # -- reads ----------------------------------------------------------------------------
    def _rows(self, query: Any) -> list[Any]:
        try:
            with self.engine.connect() as conn:
                return list(conn.execute(query))
        except SQLAlchemyError as exc:
            raise _store_error("cannot read inference store", exc) from exc

    def count(self, model_name: str | None = None, model_version: int | None = None, source: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(predictions)
        if model_name is not None:
            q = q.where(predictions.c.model_name == model_name)
        if model_version is not None:
            q = q.where(predictions.c.model_version == model_version)
        if source is not None:
            q = q.where(predictions.c.source == source)
        return int(self._rows(q)[0][0])

    def get(self, prediction_id: str) -> PredictionRecord:
        rows = self._rows(sa.select(predictions).where(predictions.c.id == prediction_id))
        if not rows:
            raise NotFoundError(f"no logged prediction with id {prediction_id!r}")
        return _record(rows[0])

    def window(
        self, model_name: str, model_version: int | None, size: int, backend: str | None = None
    ) -> list[PredictionRecord]:
        """The most recent ``size`` served predictions of a model version, oldest first;
        with ``backend``, only those embedded by that serving backend."""
        q = _recent_served(sa.select(predictions), model_name, model_version, size)
        if backend is not None:
            q = q.where(predictions.c.backend == backend)
        return [_record(r) for r in reversed(self._rows(q))]

    def backend_counts(self, model_name: str, model_version: int | None, size: int) -> dict[str | None, int]:
        """How the most recent ``size`` served predictions of a version split by backend
        (None = rows logged before the backend was recorded)."""
        sub = _recent_served(sa.select(predictions.c.backend), model_name, model_version, size).subquery()
        q = sa.select(sub.c.backend, sa.func.count()).group_by(sub.c.backend)
        return {r[0]: int(r[1]) for r in self._rows(q)}

    def labeled(
        self, since: datetime | None = None, limit: int | None = None, labeled: bool = True
    ) -> list[PredictionRecord]:
        """Rows with (or, with ``labeled=False``, without) a feedback label, newest last."""
        cond = predictions.c.feedback_label.is_not(None) if labeled else predictions.c.feedback_label.is_(None)
        q = sa.select(predictions).where(cond).order_by(predictions.c.created_at.desc(), predictions.c.id.desc())
        if since is not None:
            q = q.where(predictions.c.created_at >= _as_utc(since))
        if limit is not None:
            q = q.limit(limit)
        return [_record(r) for r in reversed(self._rows(q))]

    def rows(
        self,
        since: datetime | None = None,
        limit: int | None = None,
        labeled: bool | None = None,
        source: str | None = None,
        model_name: str | None = None,
    ) -> list[PredictionRecord]:
        """The most recent ``limit`` rows matching the filters, oldest first.

        ``labeled``: True = with a feedback label, False = without, None = both."""
        q = sa.select(predictions).order_by(predictions.c.created_at.desc(), predictions.c.id.desc())
        if labeled is not None:
            q = q.where(
                predictions.c.feedback_label.is_not(None) if labeled else predictions.c.feedback_label.is_(None)
            )
        if source is not None:
            q = q.where(predictions.c.source == source)
        if model_name is not None:
            q = q.where(predictions.c.model_name == model_name)
        if since is not None:
            q = q.where(predictions.c.created_at >= _as_utc(since))
        if limit is not None:
            q = q.limit(limit)
        return [_record(r) for r in reversed(self._rows(q))]

    def set_feedback_many(self, items: Sequence[tuple[str, int]]) -> list[str]:
        """Record many labels in one transaction, in order. Returns one status per item:
        ``applied``, ``unchanged`` (that label was already there) or ``missing`` (no such id)."""
        if not items:
            return []
        for _, label in items:
            if label not in (0, 1):
                raise DataError(f"label must be 0 or 1, got {label!r}")
        ids = list(dict.fromkeys(i for i, _ in items))
        statuses: list[str] = []
        try:
            with self.engine.begin() as conn:
                current: dict[str, int | None] = {}
                for chunk in _chunks(ids, 500):
                    q = sa.select(predictions.c.id, predictions.c.feedback_label).where(predictions.c.id.in_(chunk))
                    current.update({r.id: r.feedback_label for r in conn.execute(q)})
                now = utcnow()
                for pid, label in items:
                    if pid not in current:
                        statuses.append("missing")
                    elif current[pid] == label:
                        statuses.append("unchanged")
                    else:
                        conn.execute(
                            predictions.update()
                            .where(predictions.c.id == pid)
                            .values(feedback_label=label, feedback_at=now)
                        )
                        current[pid] = label
                        statuses.append("applied")
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write feedback: {_first_line(exc)}") from exc
        return statuses

    def imported_labels(self, hashes: Iterable[str]) -> dict[str, tuple[str, int | None]]:
        """``text_hash → (id, feedback_label)`` of imported (``source='import'``) rows."""
        out: dict[str, tuple[str, int | None]] = {}
        for chunk in _chunks(list(dict.fromkeys(hashes)), 500):
            q = sa.select(predictions.c.id, predictions.c.text_hash, predictions.c.feedback_label).where(
                predictions.c.source == "import", predictions.c.text_hash.in_(chunk)
            )
            out.update({r.text_hash: (r.id, r.feedback_label) for r in self._rows(q)})
        return out

    # -- drift checks ---------------------------------------------------------------------
    def record_drift_check(self, model_name: str, model_version: int | None, report: dict[str, Any]) -> int:
        row = {
            "created_at": utcnow(),
            "model_name": model_name,
            "model_version": model_version,
            "window": int(report.get("window", 0)),
            "n_rows": int(report.get("n_rows", 0)),
            "drift": bool(report.get("drift", False)),
            "p_value": report.get("p_value"),
            "mmd2": report.get("mmd2"),
            "cosine_distance": report.get("cosine_distance"),
            "details": json.dumps(report, default=str),
        }
        try:
            with self.engine.begin() as conn:
                result = conn.execute(drift_checks.insert().values(**row))
                key = result.inserted_primary_key
                assert key is not None  # an INSERT of one row always has a primary key
                return int(key[0])
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record drift check: {_first_line(exc)}") from exc

    def drift_history(self, model_name: str, limit: int = 1000, version: int | None = None) -> list[dict[str, Any]]:
        """The ``limit`` most recent checks of a model (of one ``version`` when given),
        oldest first."""
        q = sa.select(drift_checks).where(drift_checks.c.model_name == model_name)
        if version is not None:
            q = q.where(drift_checks.c.model_version == version)
        q = q.order_by(drift_checks.c.created_at.desc(), drift_checks.c.id.desc()).limit(limit)
        out = []
        for r in reversed(self._rows(q)):
            d = dict(r._mapping)
            d["created_at"] = _as_utc(d["created_at"])
            d["details"] = json.loads(d["details"]) if d["details"] else {}
            out.append(d)
        return out


def _record(row: Any) -> PredictionRecord:
    m = row._mapping
    emb = None if m["embedding"] is None else np.frombuffer(m["embedding"], dtype=np.float32)
    return PredictionRecord(
        id=m["id"],
        created_at=_as_utc(m["created_at"]) or utcnow(),
        model_name=m["model_name"],
        model_version=m["model_version"],
        alias=m["alias"],
        text=m["text"] if m["text"] is not None else "",
        prediction=m["prediction"],
        probability=m["probability"],
        confidence=m["confidence"],
        latency_ms=m["latency_ms"],
        embedding=emb,
        source=m["source"],
        backend=m["backend"],
        feedback_label=m["feedback_label"],
        feedback_at=_as_utc(m["feedback_at"]),
    )


def _recent_served(q: Any, model_name: str, model_version: int | None, size: int) -> Any:
    """``q`` narrowed to the ``size`` most recent served (``source='api'``) rows of a model
    (and version), newest first: the drift window and its backend split read the same rows."""
    q = (
        q.where(predictions.c.model_name == model_name, predictions.c.source == "api")
        .order_by(predictions.c.created_at.desc(), predictions.c.id.desc())
        .limit(size)
    )
    if model_version is not None:
        q = q.where(predictions.c.model_version == model_version)
    return q


def _create_at_head(conn: sa.Connection) -> None:
    """An empty database becomes a store at the newest revision (not a migration)."""
    metadata.create_all(conn)
    migrations.stamp(conn, migrations.head())


def _store_error(what: str, exc: SQLAlchemyError) -> StoreError:
    """A row the store refuses (its data: DataError, IntegrityError, a value the driver
    cannot send) → StoreRowError; anything else (connection refused or lost, a missing
    table, a timeout) → StoreUnavailableError: the same write may work later."""
    message = f"{what}: {_first_line(exc)}"
    invalidated = isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated
    if not invalidated and isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError):
        return StoreRowError(message)
    if isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError):
        return StoreRowError(message)  # SQLAlchemy could not bind a value
    return StoreUnavailableError(message)


def dead_letter(record: PredictionRecord) -> str:
    """A refused prediction as JSON that any store holds (ensure_ascii: U+0000 → \\u0000)."""
    created = _as_utc(record.created_at)
    return json.dumps(
        {
            "id": record.id,
            "created_at": None if created is None else created.isoformat(),
            "model_name": record.model_name,
            "model_version": record.model_version,
            "alias": record.alias,
            "backend": record.backend,
            "source": record.source,
            "text": record.text,
            "prediction": record.prediction,
            "probability": record.probability,
            "confidence": record.confidence,
            "latency_ms": record.latency_ms,
            "feedback_label": record.feedback_label,
            "embedding": None if record.embedding is None else np.asarray(record.embedding, np.float32).tolist(),
        },
        ensure_ascii=True,
    )


def _storable(text: str) -> str:
    """``text`` with control characters and lone surrogates escaped (error messages may
    quote the refused value)."""
    text = _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers (drift, retrain) never block the server
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_store(url: str, store_text: bool = True) -> InferenceStore:
    return InferenceStore(url, store_text=store_text)


def records_from(
    texts: Iterable[str], labels: Iterable[int], model_name: str, source: str = "import"
) -> list[PredictionRecord]:
    """Labeled texts that were never served (``feedback import`` of text,label rows)."""
    return [
        PredictionRecord(
            model_name=model_name,
            model_version=None,
            text=t,
            prediction=None,
            probability=None,
            confidence=None,
            source=source,
            feedback_label=int(lbl),
            feedback_at=utcnow(),
        )
        for t, lbl in zip(texts, labels, strict=True)
    ]
