"""The inference store: every served prediction (with its pooled embedding), feedback
labels, and drift checks, in one database (SQLite or PostgreSQL) shared by the server,
feedback import/export, retraining and the drift check.

Split by who uses what, each part a ``Database`` (one engine, schema checked on open) with
its own reads and writes:

    schema.py       Database: tables, URLs, opening, schema revision and upgrade, errors
    text.py         text_problem, text_hash: the one text rule of every way in
    predictions.py  PredictionLog: what the server writes (predictions, dead letters)
    labels.py       FeedbackLabels: labels in (feedback), rows out (retraining, export)
    drift.py        DriftLog: the drift window, its backend split, the check history
    retention.py    Retention: prune what is older than the retention, in bounded batches

``InferenceStore`` is all of them on one engine (what ``sentops serve``, the CLI and the
lifecycle steps open, through ``open_store`` / ``using_store``); a consumer that needs one
part may open just that part.

Errors say what to do next: ``StoreUnavailableError`` (the store cannot be reached: retry),
``StoreRowError`` (the store refused a row's data: retrying cannot help),
``StoreSchemaError`` (run ``sentops db upgrade``, or upgrade sentops)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sentiment_ops.store.drift import DriftLog
from sentiment_ops.store.labels import FeedbackLabels, records_from
from sentiment_ops.store.predictions import PredictionLog, PredictionRecord, dead_letter
from sentiment_ops.store.retention import PRUNE_BATCH, PruneResult, Retention
from sentiment_ops.store.schema import (
    POSTGRES_DRIVER_HINT,
    SCHEMA_LOCK_KEY,
    Database,
    metadata,
    new_id,
    normalize_url,
    utcnow,
)
from sentiment_ops.store.text import text_hash, text_problem

if TYPE_CHECKING:
    from sentiment_ops.config import Settings


class InferenceStore(PredictionLog, FeedbackLabels, DriftLog, Retention):
    """Every part of the store on one engine. Thread-safe (one engine, short
    transactions); safe to share across threads."""


def open_store(settings: Settings) -> InferenceStore:
    """The settings' inference store (``store_url``, ``store.store_text``), opened: the
    one way sentops opens it. The caller closes it (or opens it with ``using_store``)."""
    return InferenceStore(settings.store_url, store_text=settings.store.store_text)


@contextmanager
def using_store(settings: Settings, store: InferenceStore | None = None) -> Iterator[InferenceStore]:
    """``store`` when given, left open; else the settings' store, opened here and closed
    on the way out."""
    if store is not None:
        yield store
        return
    opened = open_store(settings)
    try:
        yield opened
    finally:
        opened.close()


__all__ = [
    "POSTGRES_DRIVER_HINT",
    "PRUNE_BATCH",
    "SCHEMA_LOCK_KEY",
    "Database",
    "DriftLog",
    "FeedbackLabels",
    "InferenceStore",
    "PredictionLog",
    "PredictionRecord",
    "PruneResult",
    "Retention",
    "dead_letter",
    "metadata",
    "new_id",
    "normalize_url",
    "open_store",
    "records_from",
    "text_hash",
    "text_problem",
    "using_store",
    "utcnow",
]
