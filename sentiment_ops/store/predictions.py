"""What the server writes: served predictions (``PredictionRecord``, ``add_predictions``)
and the rows the store refused (``dead_letter``, ``add_dead_letters``), plus reading rows
back one at a time (``get``, ``count``).

Several processes may share one PostgreSQL store (API replicas, drift, retrain): every row
has a random id and every write is one short transaction. A write that fails says what to
do next: ``StoreUnavailableError`` (the store cannot be reached: retry), ``StoreRowError``
(the store refused a row's data: retrying cannot help, dead-letter it)."""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from sentiment_ops.errors import NotFoundError, StoreRowError
from sentiment_ops.store.schema import (
    Database,
    as_utc,
    dead_letters,
    first_line,
    new_id,
    predictions,
    store_error,
    utcnow,
)
from sentiment_ops.store.text import storable, text_hash


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
    request_id: str | None = None  # the HTTP request that asked for it (X-Request-Id)
    # every class's probability, in the model's class order (``probability``: P(positive)
    # of a binary model only)
    probabilities: list[float] | None = None


class PredictionLog(Database):
    """The ``predictions`` rows as the server writes them, and the dead letters."""

    def add_predictions(self, records: Sequence[PredictionRecord], skip_existing: bool = False) -> int:
        """Insert rows in one transaction. ``skip_existing``: a row whose id is already
        stored is skipped instead of refused (a write retried after a commit whose answer
        was lost with the connection). Raises StoreRowError when the store refuses the
        data of a row, StoreUnavailableError when it cannot be reached."""
        if not records:
            return 0
        try:
            rows = [self._row_of(r) for r in records]
        except (ValueError, TypeError, UnicodeError) as exc:
            raise StoreRowError(f"cannot write to inference store: {first_line(exc)}") from exc
        insert: Any = predictions.insert()
        if skip_existing and self.engine.dialect.name in ("postgresql", "sqlite"):
            dialect = importlib.import_module(f"sqlalchemy.dialects.{self.engine.dialect.name}")
            insert = dialect.insert(predictions).on_conflict_do_nothing(index_elements=["id"])
        try:
            with self.engine.begin() as conn:
                conn.execute(insert, rows)
        except SQLAlchemyError as exc:
            raise store_error("cannot write to inference store", exc) from exc
        return len(rows)

    def _row_of(self, r: PredictionRecord) -> dict[str, Any]:
        return {
            "id": r.id,
            "created_at": as_utc(r.created_at),
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
            "feedback_at": as_utc(r.feedback_at),
            "backend": r.backend,
            "request_id": r.request_id,
            "probabilities": None if r.probabilities is None else json.dumps(r.probabilities),
        }

    def add_dead_letters(self, letters: Sequence[tuple[str, str, str]]) -> int:
        """Keep refused rows: ``(kind, error, payload)`` each (see ``dead_letter``)."""
        if not letters:
            return 0
        now = utcnow()
        rows = [
            {"id": new_id(), "created_at": now, "kind": kind, "error": storable(error), "payload": storable(payload)}
            for kind, error, payload in letters
        ]
        try:
            with self.engine.begin() as conn:
                conn.execute(dead_letters.insert(), rows)
        except SQLAlchemyError as exc:
            raise store_error("cannot write dead letters", exc) from exc
        return len(rows)

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent refused rows, newest first."""
        q = sa.select(dead_letters).order_by(dead_letters.c.created_at.desc()).limit(limit)
        return self._select_dicts(q)

    def count(self, model_name: str | None = None, model_version: int | None = None, source: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(predictions)
        if model_name is not None:
            q = q.where(predictions.c.model_name == model_name)
        if model_version is not None:
            q = q.where(predictions.c.model_version == model_version)
        if source is not None:
            q = q.where(predictions.c.source == source)
        return int(self._select(q)[0][0])

    def for_request(self, request_id: str) -> list[PredictionRecord]:
        """The rows stored for one HTTP request (its ``X-Request-Id``), oldest first."""
        q = (
            sa.select(predictions)
            .where(predictions.c.request_id == request_id)
            .order_by(predictions.c.created_at, predictions.c.id)
        )
        return [record_of(r) for r in self._select(q)]

    def get(self, prediction_id: str) -> PredictionRecord:
        rows = self._select(sa.select(predictions).where(predictions.c.id == prediction_id))
        if not rows:
            raise NotFoundError(f"no logged prediction with id {prediction_id!r}")
        return record_of(rows[0])


def record_of(row: Any) -> PredictionRecord:
    """A ``predictions`` row as a PredictionRecord (times in UTC, the embedding as float32)."""
    m = row._mapping
    emb = None if m["embedding"] is None else np.frombuffer(m["embedding"], dtype=np.float32)
    return PredictionRecord(
        id=m["id"],
        created_at=as_utc(m["created_at"]) or utcnow(),
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
        feedback_at=as_utc(m["feedback_at"]),
        request_id=m["request_id"],
        probabilities=None if m["probabilities"] is None else json.loads(m["probabilities"]),
    )


def dead_letter(record: PredictionRecord, store_text: bool = True) -> str:
    """A refused prediction as JSON that any store holds (ensure_ascii: U+0000 → \\u0000).
    With ``store_text`` off it holds the text's hash and no text, as the row itself would
    have: replaying it loses nothing the store was allowed to keep."""
    created = as_utc(record.created_at)
    return json.dumps(
        {
            "id": record.id,
            "created_at": None if created is None else created.isoformat(),
            "model_name": record.model_name,
            "model_version": record.model_version,
            "alias": record.alias,
            "backend": record.backend,
            "source": record.source,
            "request_id": record.request_id,
            "text": record.text if store_text else None,
            "text_hash": _hash_of_any(record.text),
            "prediction": record.prediction,
            "probability": record.probability,
            "probabilities": record.probabilities,
            "confidence": record.confidence,
            "latency_ms": record.latency_ms,
            "feedback_label": record.feedback_label,
            "embedding": None if record.embedding is None else np.asarray(record.embedding, np.float32).tolist(),
        },
        ensure_ascii=True,
    )


def _hash_of_any(text: str) -> str:
    """``text_hash``, also for a text with a lone surrogate (one reason a row is refused)."""
    try:
        return text_hash(text)
    except UnicodeEncodeError:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
