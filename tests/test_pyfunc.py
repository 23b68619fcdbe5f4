"""The logged model loads through plain MLflow and honours its signature."""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd

from sentiment_ops.config import load_settings
from sentiment_ops.registry import Registry


def test_pyfunc_through_registry(trained: dict[str, Any], plain_mlflow: str) -> None:
    registry = Registry(load_settings())
    model = mlflow.pyfunc.load_model("models:/sentiment-classifier/1")
    sig = model.metadata.signature
    assert [c.name for c in sig.inputs.inputs] == ["text"]
    assert {c.name for c in sig.outputs.inputs} >= {"label", "probability"}
    assert sig.params is not None and sig.params.to_dict()[0]["name"] == "return_embedding"

    df = pd.DataFrame({"text": ["great movie", "terrible plot", "meh"]})
    out = model.predict(df)
    assert list(out.columns) == ["label", "label_name", "probability", "confidence"]
    assert set(out["label"]) <= {0, 1}
    assert out["label_name"].tolist() == [["negative", "positive"][i] for i in out["label"]]

    with_emb = model.predict(df, params={"return_embedding": True})
    emb = np.array(with_emb["embedding"].tolist())
    assert emb.shape == (3, 32)
    np.testing.assert_allclose(with_emb["probability"], out["probability"], rtol=1e-6)
    assert registry.get_version(1).source.startswith("models:/")


def test_import_does_not_nag_about_type_hints() -> None:
    """MLflow warns at class definition when predict has no type hints, under its own filter
    that callers cannot silence; the class opts out, so commands print no such warning."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", "import sentiment_ops.pyfunc"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "type hints" not in result.stderr
