"""The drift job applies the store's retention (issue 32): with ``store.retention_days`` set,
``sentops drift`` prunes the store after the check it recorded and says how many rows went
(``pruned`` in ``--json``); without it nothing is pruned. Real SQLite MLflow, a real store
and the tiny model, rows logged as the server logs them."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from test_drift_cli import imdb_texts, log_served, production  # noqa: F401  (production: a fixture)

from sentiment_ops.config import Settings
from sentiment_ops.store import InferenceStore, PredictionRecord, utcnow


def _old_rows(settings: Settings, n: int, labeled: int) -> None:
    """``n`` predictions 60 days old, the first ``labeled`` of them labeled (logged before
    the backend was recorded, so never part of a drift window)."""
    at = utcnow() - timedelta(days=60)
    records = [
        PredictionRecord(
            model_name=settings.mlflow.model_name,
            model_version=1,
            text=f"an old review {i}",
            prediction=1,
            probability=0.9,
            confidence=0.9,
            created_at=at + timedelta(minutes=i),
            feedback_label=1 if i < labeled else None,
        )
        for i in range(n)
    ]
    store = InferenceStore(settings.store_url)
    try:
        store.add_predictions(records)
    finally:
        store.close()


def test_drift_prunes_after_the_check_when_retention_is_set(
    cli: Callable[..., Any],
    production: Settings,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log_served(production, imdb_texts(60))
    _old_rows(production, 9, labeled=2)

    kept = json.loads(cli("drift", "--json").stdout)
    assert kept["pruned"] is None and kept["n_rows"] == 60  # no retention: nothing pruned

    monkeypatch.setenv("SENTOPS_STORE__RETENTION_DAYS", "30")
    result = cli("drift", "--json")
    assert result.exit_code in (0, 3), result.output
    report = json.loads(result.stdout)
    assert report["n_rows"] == 60 and report["check_id"] is not None
    pruned = report["pruned"]
    assert (pruned["days"], pruned["predictions"], pruned["labeled_kept"], pruned["drift_checks"]) == (30, 7, 2, 0)
    store = InferenceStore(production.store_url)
    try:
        assert store.count() == 60 + 2  # the served window and the old labeled rows
        assert len(store.rows(labeled=True)) == 2
        assert len(store.drift_history(production.mlflow.model_name)) == 2  # both checks are recent
    finally:
        store.close()

    text = cli("drift")
    assert text.exit_code in (0, 3), text.output
    assert "retention: pruned 0 predictions older than 30 days" in text.stdout
