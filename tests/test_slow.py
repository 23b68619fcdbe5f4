"""The real bundled MiniLM, on a few dozen reviews (a couple of minutes on CPU)."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from sentiment_ops.data import golden_test


@pytest.mark.slow
def test_real_bundled_model_trains_registers_and_reloads(  # type: ignore[no-untyped-def]
    cli, monkeypatch: pytest.MonkeyPatch, plain_mlflow: str
) -> None:
    monkeypatch.setenv("SENTOPS_TRAIN__REFERENCE_SAMPLES", "32")
    monkeypatch.setenv("SENTOPS_TRAIN__VAL_SAMPLES", "32")
    result = cli("train", "--max-samples", "64", "--eval-samples", "48", "--max-length", "96", "--json", "--promote")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["version"] == 1 and out["promoted"]["to_version"] == 1
    models = json.loads(cli("models", "--json").stdout)
    assert models[0]["aliases"] == ["production"]

    # The registered artifact is the trained model: loaded through plain MLflow by alias,
    # it reproduces the golden accuracy the run reported, with the real 384-d embedding.
    golden = golden_test(48)
    loaded = mlflow.pyfunc.load_model("models:/sentiment-classifier@production")
    pred = loaded.predict(pd.DataFrame({"text": golden.texts}), params={"return_embedding": True})
    accuracy = float(np.mean(pred["label"].to_numpy() == golden.labels))
    assert accuracy == pytest.approx(out["metrics"]["golden_accuracy"], abs=1e-9)
    assert len(pred["embedding"][0]) == 384
