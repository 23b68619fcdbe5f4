"""Labels in the loop for a model of three classes (negative / neutral / positive): feedback
by name or index, active selection over k classes, retraining that keeps production's
classes, refuses a class it does not have, gates on macro-F1 and scores production on a
hold-out once per version. The tiny 3-class model of ``trained3`` is version 1, promoted."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_three_class_csv

from sentiment_ops.config import load_settings
from sentiment_ops.labeling import Strategy
from sentiment_ops.labeling.queue import Selection, choose_to_label, probability_matrix
from sentiment_ops.labeling.strategies import margins, select
from sentiment_ops.labels import LabelSet
from sentiment_ops.store import InferenceStore, PredictionRecord
from sentiment_ops.tracking.registry import Registry

MODEL = "sentiment-classifier"
THREE = LabelSet(("negative", "neutral", "positive"))


@pytest.fixture()
def production3(cli: Callable[..., Any], trained3: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Registry:
    """The 3-class version 1 in production; small retraining settings."""
    for key, value in {"MIN_LABELS": "20", "GOLDEN_SAMPLES": "40", "LEARNING_RATE": "0.001"}.items():
        monkeypatch.setenv(f"SENTOPS_RETRAIN__{key}", value)
    assert cli("promote", "--version", "1").exit_code == 0
    return Registry(load_settings())


def _texts(tmp_path: Path, rows: int, seed: int) -> list[tuple[str, str]]:
    """(text, class name) rows of ``write_three_class_csv`` with another seed: new texts."""
    path = write_three_class_csv(tmp_path / f"more-{seed}.csv", rows=rows, seed=seed)
    with path.open(newline="") as fh:
        return [(r["text"], r["label"]) for r in csv.DictReader(fh)]


def _serve(rows: list[tuple[str, str]], labeled: bool, confidence: float | list[float] = 0.9) -> list[PredictionRecord]:
    """The rows logged as served by version 1 (guessing the true class); with ``labeled`` a
    person then gives each its true class."""
    store = InferenceStore(load_settings().store_url)
    recs = [
        PredictionRecord(
            model_name=MODEL,
            model_version=1,
            text=text,
            prediction=THREE.names.index(label),
            probability=None,
            confidence=confidence[i] if isinstance(confidence, list) else confidence,
        )
        for i, (text, label) in enumerate(rows)
    ]
    store.add_predictions(recs)
    if labeled:
        for rec, (_, label) in zip(recs, rows, strict=True):
            assert store.set_feedback(rec.id, THREE.names.index(label), classes=THREE.k)
    store.close()
    return recs


def test_registry_reads_the_classes_of_a_version(production3: Registry) -> None:
    assert production3.version_classes(1) == THREE


def test_feedback_import_by_name_and_index_refuses_other_labels(
    cli: Callable[..., Any], production3: Registry, tmp_path: Path
) -> None:
    recs = _serve(_texts(tmp_path, 4, seed=5), labeled=False)
    path = tmp_path / "labels.csv"
    path.write_text(
        "id,label\n"
        f"{recs[0].id},Neutral\n"  # line 2: a name, any case
        f"{recs[1].id},2\n"  # line 3: an index
        f"{recs[2].id},sideways\n"  # line 4: not a class
        f"{recs[3].id},3\n"  # line 5: no class 3
    )
    result = cli("feedback", "import", str(path))
    assert result.exit_code == 65, result.output
    lines = [line for line in result.stderr.splitlines() if "line " in line]
    assert len(lines) == 2
    assert "line 4: label 'sideways' is not a class of the model: negative, neutral, positive" in lines[0]
    assert "line 5: label '3'" in lines[1] and "negative, neutral, positive" in lines[1]
    store = InferenceStore(load_settings().store_url)
    try:
        assert [store.get(r.id).feedback_label for r in recs] == [1, 2, None, None]
    finally:
        store.close()

    out = tmp_path / "export.csv"
    assert cli("feedback", "export", str(out)).exit_code == 0
    with out.open(newline="") as fh:
        exported = {r["id"]: r for r in csv.DictReader(fh)}
    assert exported[recs[0].id]["label"] == "neutral" and exported[recs[1].id]["label"] == "positive"
    assert exported[recs[0].id]["prediction"] in THREE.names
    assert cli("feedback", "import", str(out)).exit_code == 0  # names import back as they are


def test_margin_over_three_classes_picks_the_most_uncertain() -> None:
    probs = np.array(
        [
            [0.90, 0.05, 0.05],  # sure
            [0.34, 0.33, 0.33],  # all but a tie
            [0.60, 0.30, 0.10],
            [0.10, 0.45, 0.45],  # a tie between neutral and positive
        ]
    )
    assert margins(probs) == pytest.approx([0.425, 0.005, 0.15, 0.0])
    picks = select(Strategy.UNCERTAIN, 3, 0, probabilities=probs)
    assert [p.index for p in picks] == [3, 1, 2]  # P(positive) alone would rank row 2 before row 1
    binary = np.array([0.2, 0.55, 0.9])
    assert margins(np.column_stack([1 - binary, binary])) == pytest.approx(margins(binary))


def test_queue_of_a_three_class_version(production3: Registry, tmp_path: Path) -> None:
    # rows logged without per-class probabilities: the predicted class's confidence decides
    recs = _serve(_texts(tmp_path, 3, seed=6), labeled=False, confidence=[0.9, 0.4, 0.7])
    sure, unsure = recs[0], recs[1]
    store = InferenceStore(load_settings().store_url)
    try:
        queue = choose_to_label(load_settings(), production3, store, Selection(Strategy.UNCERTAIN, 3))
    finally:
        store.close()
    assert queue.classes == THREE and queue.to_dict()["classes"] == list(THREE.names)
    assert [i.record.id for i in queue.items] == [unsure.id, recs[2].id, sure.id]
    assert {i.to_dict()["label"] for i in queue.items} <= set(THREE.names)

    per_class = PredictionRecord(MODEL, 1, "x", 1, None, 0.5)
    per_class.probabilities = [0.2, 0.5, 0.3]  # type: ignore[attr-defined]  # the server's per-class column
    assert probability_matrix([per_class], THREE)[0] == pytest.approx([0.2, 0.5, 0.3])


def test_retrain_keeps_three_classes_gates_on_macro_f1_and_reuses_production_scores(
    cli: Callable[..., Any], production3: Registry, tmp_path: Path
) -> None:
    _serve(_texts(tmp_path, 60, seed=7), labeled=True)
    first = cli("retrain", "--json")
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)
    assert out["data"]["labels"] == "negative,neutral,positive"
    assert set(out["data"]["train_label_counts"]) == set(THREE.names)
    assert production3.version_classes(out["version"]) == THREE  # the candidate keeps production's classes
    gate = out["gate"]
    assert gate["f1_name"] == "macro-F1"
    m = out["metrics"]
    assert gate["f1_gain"] == pytest.approx(m["candidate_new_macro_f1"] - m["production_new_macro_f1"])
    assert "production_golden_accuracy" in m  # negative and positive: scored on the golden IMDB hold-out
    # the golden scores `sentops train` kept with version 1; the new-domain hold-out scored once
    assert out["production_scores_reused"] == ["golden"]
    kept = {k: v for k, v in production3.get_version(1).tags.items() if k.startswith("sentops.scores.")}
    assert len(kept) == 2  # golden and new-domain hold-out of version 1
    assert f"sentops.scores.{out['data']['golden_hash']}" in kept

    second = cli("retrain", "--json")
    assert second.exit_code == 0, second.output
    again = json.loads(second.stdout)
    assert again["production_scores_reused"] == ["golden", "new"]  # not scored again
    for key in ("production_golden_accuracy", "production_new_macro_f1"):
        assert again["metrics"][key] == pytest.approx(m[key])


def test_retrain_refuses_a_class_production_does_not_have(
    cli: Callable[..., Any], production3: Registry, tmp_path: Path
) -> None:
    recs = _serve(_texts(tmp_path, 30, seed=8), labeled=True)
    store = InferenceStore(load_settings().store_url)
    try:
        assert store.set_feedback(recs[0].id, 3, classes=4)  # a fourth class, labeled for another model
    finally:
        store.close()
    result = cli("retrain")
    assert result.exit_code == 65, result.output
    error = [line for line in result.stderr.splitlines() if line.startswith("Error")]  # after the progress bar
    assert len(error) == 1, result.stderr
    assert "class 3, which production version 1 does not have" in error[0]
    assert "negative, neutral, positive" in error[0] and "sentops train --data" in error[0]
    assert [v.version for v in production3.list_versions()] == [1]
