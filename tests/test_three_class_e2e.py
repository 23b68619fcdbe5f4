"""The whole loop on a negative / neutral / positive model, through the parts a team runs:
train → promote → serve → feedback by class name → retrain → gate → promote → hot reload →
batch score. Every step reads the classes from the model, none from code."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import write_three_class_csv
from serve_support import Server, serve_settings, start_server, wait_for

CLASSES = ["negative", "neutral", "positive"]
TOKEN = "loop-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_three_class_model_through_the_whole_loop(
    cli: Callable[..., Any],
    trained3: dict[str, Any],
    running: list[Server],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # The tiny model's gain on 20 hold-out labels is noise: the gate is asked for no gain,
    # so this test is about the loop; the gate's thresholds have their own tests.
    for key, value in {"MIN_LABELS": "40", "MIN_F1_GAIN": "-1", "MAX_ACC_DROP": "1", "GOLDEN_SAMPLES": "40"}.items():
        monkeypatch.setenv(f"SENTOPS_RETRAIN__{key}", value)
    monkeypatch.setenv("SENTOPS_FEEDBACK_TOKEN", TOKEN)
    assert cli("promote", "--version", "1").exit_code == 0
    srv = start_server(serve_settings(poll_interval_s=0.2))
    running.append(srv)

    with (write_three_class_csv(tmp_path / "traffic.csv", rows=90, seed=11)).open(newline="") as fh:
        traffic = [(r["text"], r["label"]) for r in csv.DictReader(fh)]
    with srv.client() as c:
        assert c.get("/model").json()["labels"] == CLASSES
        answers = c.post("/predict/batch", json={"texts": [t for t, _ in traffic]}).json()["predictions"]
        assert {a["label"] for a in answers} <= set(CLASSES)
        for answer, (_, truth) in zip(answers, traffic, strict=True):
            assert set(answer["probabilities"]) == set(CLASSES)
            r = c.post(
                "/feedback", json={"id": answer["id"], "label": truth.capitalize()}, headers=AUTH
            )  # by name, any case
            assert r.status_code == 200, r.text
        srv.state.writer.flush()

        retrained = cli("retrain", "--promote-if-better", "--json")
        assert retrained.exit_code == 0, retrained.output
        out = json.loads(retrained.stdout)
        assert out["gate"]["passed"] and out["gate"]["f1_name"] == "macro-F1" and out["promoted"]
        assert set(out["data"]["train_label_counts"]) == set(CLASSES)
        v2 = out["version"]
        assert v2 == 2
        info = wait_for(lambda: (i := c.get("/model").json())["version"] == v2 and i, timeout=30)
        assert info["labels"] == CLASSES
        after = c.post("/predict", json={"text": "the schedule update arrived"}).json()
        assert after["model"]["version"] == v2 and after["label"] in CLASSES
        assert sum(after["probabilities"].values()) == pytest.approx(1.0)

    src = tmp_path / "batch.csv"
    pd.DataFrame({"text": [t for t, _ in traffic[:30]]}).to_csv(src, index=False)
    dest = tmp_path / "scored.parquet"
    scored = cli("score", str(src), "--output", str(dest), "--workers", "1", "--json")
    assert scored.exit_code == 0, scored.output
    table = pq.read_table(dest).to_pandas()
    assert json.loads(scored.stdout)["model_version"] == v2
    assert {"p_negative", "p_neutral", "p_positive"} <= set(table.columns) and "probability" not in table.columns
    assert set(table["label_name"]) <= set(CLASSES) and len(table) == 30
