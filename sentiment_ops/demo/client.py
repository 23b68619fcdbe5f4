"""The demo's HTTP calls to the server it started: traffic, labels, scores, reloads."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np

from sentiment_ops.data import Split
from sentiment_ops.errors import SentopsError
from sentiment_ops.evaluation import classification_metrics


def send_traffic(client: httpx.Client, texts: list[str], batch: int = 16) -> list[dict[str, Any]]:
    """Send texts the way clients do (POST /predict/batch in small batches); return predictions."""
    out: list[dict[str, Any]] = []
    for start in range(0, len(texts), batch):
        resp = client.post("/predict/batch", json={"texts": texts[start : start + batch]})
        resp.raise_for_status()
        out.extend(resp.json()["predictions"])
    return out


def post_labels(client: httpx.Client, predictions: list[dict[str, Any]], labels: np.ndarray, token: str) -> int:
    """A simulated person: the corpus's true label for each logged prediction id (with the
    server's label-writer token)."""
    auth = {"Authorization": f"Bearer {token}"}
    for pred, label in zip(predictions, labels.tolist(), strict=True):
        client.post("/feedback", json={"id": pred["id"], "label": int(label)}, headers=auth).raise_for_status()
    return len(predictions)


def score_through_api(client: httpx.Client, split: Split) -> dict[str, float]:
    preds = send_traffic(client, split.texts, batch=32)
    probs = np.array([p["probability"] for p in preds])
    m = classification_metrics(split.labels, probs)
    return {"accuracy": m["accuracy"], "f1": m["f1"], "version": float(preds[0]["model"]["version"])}


def wait_for_version(client: httpx.Client, version: int, timeout_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        info = client.get("/model").json()
        if info.get("version") == version:
            return time.monotonic() - start
        time.sleep(0.5)
    raise SentopsError(f"the server did not load version {version} within {timeout_s:.0f} s")


def drift_summary(report: Any) -> dict[str, Any]:
    return {
        "drift": report.drift,
        "p_value": report.p_value,
        "mmd2": report.mmd2,
        "cosine_distance": report.cosine_distance,
        "cosine_drift": report.cosine_drift,
        "n_rows": report.n_rows,
        "check_id": report.check_id,
    }
