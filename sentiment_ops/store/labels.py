"""What feedback and retraining read and write: true labels on logged predictions
(``set_feedback`` from ``POST /feedback``, ``clear_feedback`` from the labeling page's undo,
``set_feedback_many`` and ``imported_labels`` from ``sentops feedback import``,
``records_from`` for labeled texts never served), the texts that already hold a label
(``labeled_hashes``: what label selection leaves out), and the rows, labeled or not, that
retraining learns from and ``sentops feedback export`` writes out (``rows``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from sentiment_ops.errors import DataError, NotFoundError, StoreError
from sentiment_ops.store.predictions import PredictionRecord, record_of
from sentiment_ops.store.schema import Database, as_utc, chunks, first_line, predictions, utcnow

CHUNK = 500  # ids per IN (...) list


def _label_of(conn: sa.Connection, prediction_id: str) -> int | None:
    """The label a logged prediction holds (None: none yet); NotFoundError when no such row."""
    row = conn.execute(sa.select(predictions.c.feedback_label).where(predictions.c.id == prediction_id)).first()
    if row is None:
        raise NotFoundError(f"no logged prediction with id {prediction_id!r}")
    return row.feedback_label  # type: ignore[no-any-return]


class FeedbackLabels(Database):
    """Labels on the ``predictions`` rows, and the rows read back for labeling and training."""

    def set_feedback(self, prediction_id: str, label: int, classes: int = 2) -> bool:
        """Record the true label (a class index below ``classes``) of a logged prediction.
        Returns False when that same label was already recorded (nothing applied twice)."""
        _check_label(label, classes)
        try:
            with self.engine.begin() as conn:
                if _label_of(conn, prediction_id) == label:
                    return False
                conn.execute(
                    predictions.update()
                    .where(predictions.c.id == prediction_id)
                    .values(feedback_label=label, feedback_at=utcnow())
                )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write feedback: {first_line(exc)}") from exc
        return True

    def clear_feedback(self, prediction_id: str) -> bool:
        """Remove the label of a logged prediction (an undo: the row is unlabeled again, as
        served). Returns False when it held none."""
        try:
            with self.engine.begin() as conn:
                if _label_of(conn, prediction_id) is None:
                    return False
                conn.execute(
                    predictions.update()
                    .where(predictions.c.id == prediction_id)
                    .values(feedback_label=None, feedback_at=None)
                )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write feedback: {first_line(exc)}") from exc
        return True

    def labeled_hashes(self, hashes: Iterable[str]) -> set[str]:
        """The text hashes among ``hashes`` that hold a label on any row (served or imported)."""
        out: set[str] = set()
        for chunk in chunks(list(dict.fromkeys(hashes)), CHUNK):
            q = sa.select(predictions.c.text_hash).where(
                predictions.c.text_hash.in_(chunk), predictions.c.feedback_label.is_not(None)
            )
            out.update(r.text_hash for r in self._select(q))
        return out

    def set_feedback_many(self, items: Sequence[tuple[str, int]], classes: int = 2) -> list[str]:
        """Record many labels (class indices below ``classes``) in one transaction, in order.
        Returns one status per item: ``applied``, ``unchanged`` (that label was already
        there) or ``missing`` (no such id)."""
        if not items:
            return []
        for _, label in items:
            _check_label(label, classes)
        ids = list(dict.fromkeys(i for i, _ in items))
        statuses: list[str] = []
        try:
            with self.engine.begin() as conn:
                current: dict[str, int | None] = {}
                for chunk in chunks(ids, CHUNK):
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
            raise StoreError(f"cannot write feedback: {first_line(exc)}") from exc
        return statuses

    def imported_labels(self, hashes: Iterable[str]) -> dict[str, tuple[str, int | None]]:
        """``text_hash → (id, feedback_label)`` of imported (``source='import'``) rows."""
        out: dict[str, tuple[str, int | None]] = {}
        for chunk in chunks(list(dict.fromkeys(hashes)), CHUNK):
            q = sa.select(predictions.c.id, predictions.c.text_hash, predictions.c.feedback_label).where(
                predictions.c.source == "import", predictions.c.text_hash.in_(chunk)
            )
            out.update({r.text_hash: (r.id, r.feedback_label) for r in self._select(q)})
        return out

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
            q = q.where(predictions.c.created_at >= as_utc(since))
        if limit is not None:
            q = q.limit(limit)
        return [record_of(r) for r in reversed(self._select(q))]


def _check_label(label: int, classes: int) -> None:
    if label not in range(classes):
        expected = "0 or 1" if classes == 2 else f"a class index 0..{classes - 1}"
        raise DataError(f"label must be {expected}, got {label!r}")


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
