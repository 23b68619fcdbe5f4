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

    src = tmp_path / "in.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(src, index=False)
    dest = tmp_path / "out.parquet"
    result = cli("score", str(src), "--output", str(dest), "--version", "1", "--workers", "1", "--json")
    assert result.exit_code == 0, result.output
    table = pq.read_table(dest)
    assert table.column_names == ["row", *outputs]
    scored = table.to_pandas()
    np.testing.assert_allclose(scored[["p_negative", "p_neutral", "p_positive"]].sum(axis=1), 1.0, atol=1e-6)
    assert scored["label"].tolist() == scored[["p_negative", "p_neutral", "p_positive"]].to_numpy().argmax(axis=1).tolist()
    # the int8 graph (what sentops score runs) against the torch weights: close, not equal
    np.testing.assert_allclose(scored[["p_negative", "p_neutral", "p_positive"]].to_numpy(), probs, atol=3e-2)

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

