"""The store's parts (sentiment_ops.store: PredictionLog, FeedbackLabels, DriftLog), each
opened alone on one SQLite store as its consumer would: what the server writes, feedback
labels and reads back, drift windows and its history; and the ``rows`` filters that
retraining and ``feedback export`` use."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from sentiment_ops.errors import DataError, NotFoundError
from sentiment_ops.store import (
    DriftLog,
    FeedbackLabels,
    InferenceStore,
    PredictionLog,
    PredictionRecord,
    records_from,
)
from sentiment_ops.store.schema import drift_checks

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def _served(i: int, model: str = "m", version: int = 1, backend: str = "torch") -> PredictionRecord:
    return PredictionRecord(
        model_name=model,
        model_version=version,
        text=f"text {i}",
        prediction=i % 2,
        probability=0.5,
        confidence=0.5,
        embedding=np.full(4, i, dtype=np.float32),
        backend=backend,
        created_at=T0 + timedelta(seconds=i),
    )


@pytest.fixture()
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


def test_each_part_alone_sees_what_the_others_wrote(url: str) -> None:
    server, feedback, drift = PredictionLog(url), FeedbackLabels(url), DriftLog(url)
    recs = [_served(i, backend="onnx" if i == 4 else "torch") for i in range(5)]
    assert server.add_predictions(recs) == 5
    assert not hasattr(server, "window") and not hasattr(drift, "set_feedback")  # each has its own part

    assert feedback.set_feedback(recs[1].id, 1) is True
    assert feedback.set_feedback(recs[1].id, 1) is False  # nothing applied twice
    assert feedback.set_feedback_many([(recs[2].id, 0), ("nope", 1), (recs[1].id, 1)]) == [
        "applied",
        "missing",
        "unchanged",
    ]
    with pytest.raises(DataError, match="label must be 0 or 1"):
        feedback.set_feedback(recs[0].id, 2)
    with pytest.raises(NotFoundError):
        feedback.set_feedback("nope", 0)
    assert server.get(recs[2].id).feedback_label == 0

    window = drift.window("m", 1, 3)
    assert [r.id for r in window] == [r.id for r in recs[2:]]  # newest 3, oldest first
    assert drift.backend_counts("m", 1, 3) == {"torch": 2, "onnx": 1}  # of those 3
    torch_only = drift.window("m", 1, 3, backend="torch")  # the newest 3 that torch embedded
    assert [r.id for r in torch_only] == [r.id for r in recs[1:4]]
    check = drift.record_drift_check("m", 1, {"window": 3, "n_rows": 3, "drift": False, "p_value": 0.4})
    assert [(h["id"], h["p_value"]) for h in DriftLog(url).drift_history("m")] == [(check, 0.4)]
    for part in (server, feedback, drift):
        part.close()


def test_rows_filters_labels_source_model_since_and_limit(url: str) -> None:
    store = InferenceStore(url)
    recs = [_served(i) for i in range(4)] + [_served(9, model="other")]
    store.add_predictions(recs)
    store.add_predictions(records_from(["an imported text"], [1], "m"))
    store.set_feedback(recs[0].id, 0)

    def ids(**filters: object) -> list[str]:
        return [r.id for r in store.rows(**filters)]  # type: ignore[arg-type]

    labeled = store.rows(labeled=True)
    assert [(r.source, r.feedback_label) for r in labeled] == [("api", 0), ("import", 1)]  # oldest first
    assert ids(labeled=False) == [r.id for r in recs[1:]]
    assert ids(labeled=False, source="api", model_name="m") == [r.id for r in recs[1:4]]
    assert ids(source="api", model_name="m", limit=2) == [recs[2].id, recs[3].id]  # the newest 2
    assert ids(since=T0 + timedelta(seconds=3), source="api") == [recs[3].id, recs[4].id]
    assert len(store.rows()) == store.count() == 6
    store.close()


def test_drift_checks_are_kept_and_read_without_served_texts(url: str) -> None:
    """A check is recorded with its farthest rows' ids and distances only, and a check
    recorded with texts (before this rule) is read back without them."""
    drift = DriftLog(url)
    far = [{"index": 0, "id": "a1", "distance": 2.5, "text": "a served text"}]
    report = {"window": 3, "n_rows": 3, "drift": True, "p_value": 0.001, "farthest": far}
    drift.record_drift_check("m", 1, report)
    with drift.engine.begin() as conn:  # as older sentops recorded it: the text in details
        conn.execute(
            drift_checks.insert().values(
                created_at=T0,
                model_name="m",
                model_version=1,
                window=3,
                n_rows=3,
                drift=False,
                details=json.dumps(report),
            )
        )
        stored = [r[0] for r in conn.execute(sa.select(drift_checks.c.details))]
    assert "a served text" not in stored[0] and json.loads(stored[0])["farthest"][0]["id"] == "a1"
    history = drift.drift_history("m")
    assert [h["details"]["farthest"] for h in history] == [[{"index": 0, "id": "a1", "distance": 2.5}]] * 2
    assert report["farthest"][0]["text"] == "a served text"  # the caller's report is left as it was
    drift.close()
