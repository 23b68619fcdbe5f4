"""A negative / neutral / positive model through the logged pyfunc, ``sentops score``,
``sentops models`` and its int8 graph: one probability column per class everywhere."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from sentiment_ops.inference.passes import probability_columns
from sentiment_ops.labels import BINARY, LabelSet

THREE = ("negative", "neutral", "positive")
TEXTS = ["loved it, brilliant", "awful and boring", "the update arrived on tuesday", "great station"]


def test_probability_columns_are_column_safe() -> None:
    assert probability_columns(BINARY) == ["p_negative", "p_positive"]
    assert probability_columns(LabelSet(("1 star", "2-stars", "Three"))) == ["p_1_star", "p_2_stars", "p_three"]
    # two names that make one column: every class by its index instead
    assert probability_columns(LabelSet(("a b", "a_b", "c"))) == ["p_0", "p_1", "p_2"]


def test_pyfunc_score_and_models_carry_the_three_classes(
    cli: Callable[..., Any], trained3: dict[str, Any], plain_mlflow: str, tmp_path: Path
) -> None:
    model = mlflow.pyfunc.load_model("models:/sentiment-classifier/1")
    assert model.metadata.metadata["labels"] == list(THREE)
    outputs = [c.name for c in model.metadata.signature.outputs.inputs]
    assert outputs == ["label", "label_name", "confidence", "p_negative", "p_neutral", "p_positive"]
    out = model.predict(pd.DataFrame({"text": TEXTS}))
    assert list(out.columns) == outputs  # no P(positive) column: it means nothing for three classes
    probs = out[["p_negative", "p_neutral", "p_positive"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert out["label"].tolist() == probs.argmax(axis=1).tolist()
    assert out["label_name"].tolist() == [THREE[i] for i in out["label"]]
    np.testing.assert_allclose(out["confidence"], probs.max(axis=1))
    # /invocations of `mlflow models serve` (its scoring app, in process): the same columns
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    with TestClient(scoring_server.init(model)) as client:
        payload = {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}}
        answered = client.post("/invocations", json=payload)
    assert answered.status_code == 200, answered.text
    rows = answered.json()["predictions"]
    assert [list(r) for r in rows] == [outputs] * len(TEXTS)
    np.testing.assert_allclose([[r[c] for c in outputs[3:]] for r in rows], probs, atol=1e-6)

    src = tmp_path / "in.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(src, index=False)
    dest = tmp_path / "out.parquet"
    result = cli("score", str(src), "--output", str(dest), "--version", "1", "--workers", "1", "--json")
    assert result.exit_code == 0, result.output
    table = pq.read_table(dest)
    assert table.column_names == ["row", *outputs]
    scored = table.to_pandas()[["p_negative", "p_neutral", "p_positive"]].to_numpy()
    np.testing.assert_allclose(scored.sum(axis=1), 1.0, atol=1e-6)
    assert table.column("label").to_pylist() == scored.argmax(axis=1).tolist()
    # the int8 graph (what sentops score runs) against the torch weights: close, not equal
    np.testing.assert_allclose(scored, probs, atol=3e-2)

    listing = cli("models", "--json")
    assert json.loads(listing.stdout)[0]["classes"] == list(THREE)
    shown = cli("models", env={"COLUMNS": "80"})
    assert shown.exit_code == 0 and "neg/neu/pos" in shown.stdout
    assert max(len(line) for line in shown.stdout.splitlines()) <= 80


def test_the_int8_graph_of_a_three_class_model_answers_three_probabilities(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from sentiment_ops.inference.onnx import ONNX_FILE, OnnxPredictor, export_int8
    from sentiment_ops.inference.passes import forward_grouped
    from sentiment_ops.modeling import SentimentModel, load_classifier, load_tokenizer, save_tiny_bert

    classes = LabelSet(THREE)
    base = str(save_tiny_bert(tmp_path / "tiny3", seed=3, classes=classes))
    saved = SentimentModel(load_classifier(base, classes), load_tokenizer(base), 64, classes=classes)
    model = SentimentModel.from_dir(saved.save(tmp_path / "model"))  # as a logged model loads
    assert model.classes == classes
    onnx = OnnxPredictor(model, export_int8(model, tmp_path / "graph" / ONNX_FILE), threads=1)
    texts = [*TEXTS, "a much longer review that goes on about the plot, the actors and the music for a while"]
    want = model.predict(texts, with_embeddings=False)
    got = forward_grouped(onnx, onnx.encode(texts))
    assert got.classes == classes and got.probabilities.shape == (len(texts), 3)
    np.testing.assert_allclose(got.probabilities.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(got.probabilities, want.probabilities, atol=2e-2)


def test_drift_reports_the_chi_square_label_mix_of_three_classes(
    cli: Callable[..., Any], trained3: dict[str, Any], tmp_path: Path
) -> None:
    """A drift check of a 3-class model: the window's class shares against the reference's,
    the chi-square test deciding label drift, and the calibrated test's third score on the
    reference's most predicted class; the monitoring run records each class's share."""
    from sentiment_ops.config import load_settings
    from sentiment_ops.drift.detectors import DriftReport
    from sentiment_ops.drift.history import check_metrics

    assert cli("promote", "--version", "1").exit_code == 0
    texts = pd.read_csv(trained3["data"])["text"].tolist()[:90]
    src = tmp_path / "window.csv"
    pd.DataFrame({"text": texts}).to_csv(src, index=False)
    scored = cli("score", str(src), "--output", str(tmp_path / "w.parquet"), "--log", "--workers", "1")
    assert scored.exit_code == 0, scored.output
    result = cli("drift", "--source", "batch", "--permutations", "200", "--json")
    assert result.exit_code in (0, 3), result.output
    report = json.loads(result.stdout)
    mix = report["label_mix"]
    assert mix["classes"] == list(THREE) and mix["window_n"] == 90
    assert set(mix["window_shares"]) == set(THREE) and sum(mix["window_shares"].values()) == pytest.approx(1.0)
    # the tiny model may predict fewer classes than it knows: a class neither side predicts has no degree
    assert mix["chi2_dof"] == len([c for c in THREE if mix["window_shares"][c] + mix["reference_shares"][c] > 0]) - 1
    assert 0 < mix["chi2_p_value"] <= 1 and mix["window_positive"] == mix["window_shares"]["positive"]
    assert mix["p_value"] == mix["chi2_p_value"] and report["label_drift"] == (mix["p_value"] < report["alpha"])
    assert report["calibrated"]["label_class"] in THREE
    shown = cli("drift", "--source", "batch", "--permutations", "200", env={"COLUMNS": "200"})
    assert shown.exit_code in (0, 3) and "Label mix" in shown.stdout and "neutral" in shown.stdout
    metrics = check_metrics(DriftReport(**report))
    assert {f"drift_window_share_{name}" for name in THREE} <= set(metrics)
    assert load_settings().drift.method == "calibrated"


def test_label_mix_is_a_chi_square_test_over_k_classes() -> None:
    """For two classes the chi-square test is the two-proportion z-test (the p-value binary
    reports have always had); for three it matches scipy's test of homogeneity."""
    from scipy.stats import chi2_contingency

    from sentiment_ops.drift.detectors import label_mix_test

    rng = np.random.default_rng(0)
    ref, win = rng.integers(0, 2, 500), rng.choice(2, 300, p=[0.4, 0.6])
    binary = label_mix_test(ref, win)
    assert binary.p_value == pytest.approx(binary.chi2_p_value, rel=1e-9)
    assert binary.window_positive == binary.window_shares["positive"] == pytest.approx(win.mean())
    ref3, win3 = rng.integers(0, 3, 500), rng.choice(3, 300, p=[0.2, 0.3, 0.5])
    mix = label_mix_test(ref3, win3, LabelSet(THREE))
    table = np.vstack([np.bincount(ref3, minlength=3), np.bincount(win3, minlength=3)])
    stat, p, dof, _ = chi2_contingency(table, correction=False)
    assert (mix.chi2, mix.chi2_dof) == (pytest.approx(stat), dof) and mix.p_value == pytest.approx(p, rel=1e-9)
    assert mix.reference_shares["neutral"] == pytest.approx((ref3 == 1).mean()) and mix.p_value < 0.01
    # a class missing from both sides leaves the test (no degree of freedom for it)
    assert label_mix_test(np.array([0, 2, 2]), np.array([0, 0, 2]), LabelSet(THREE)).chi2_dof == 1
