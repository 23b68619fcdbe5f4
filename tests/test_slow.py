"""The real bundled MiniLM, on a few dozen reviews (minutes on CPU)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_real_bundled_model_trains_and_registers(cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SENTOPS_TRAIN__REFERENCE_SAMPLES", "32")
    result = cli(
        "train", "--max-samples", "48", "--eval-samples", "48", "--max-length", "96", "--json",
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["version"] == 1
    assert 0.0 <= out["metrics"]["golden_accuracy"] <= 1.0
    # 48 reviews are enough for the pre-trained encoder to rank reviews better than chance
    assert out["metrics"]["golden_roc_auc"] > 0.6
    promoted = cli("promote", "--version", "1")
    assert promoted.exit_code == 0
    models = json.loads(cli("models", "--json").stdout)
    assert models[0]["aliases"] == ["production"]
