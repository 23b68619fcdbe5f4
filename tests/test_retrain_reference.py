"""The drift reference of a retrained version is the traffic it was retrained for.

Version 1 (tiny model, IMDB reference) serves a 70/30 mix of tweets and IMDB reviews; a
person labels other tweets; ``sentops retrain`` makes version 2. Its reference and
calibration set must be served texts it neither trained nor was scored on, drawn in the
proportion served, so that version 2 on more of that traffic reads no drift while a shift
away from it is still caught."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sentiment_ops.config import Settings, load_settings
from sentiment_ops.data import load_corpus
from sentiment_ops.drift.check import run_drift_check
from sentiment_ops.drift.reference import download_reference, embed_as_served
from sentiment_ops.jobs.retrain_reference import MIN_SERVED, SOURCE_TAG, split_sizes
from sentiment_ops.modeling import SentimentModel
from sentiment_ops.store import InferenceStore, PredictionRecord
from sentiment_ops.tracking.registry import Registry

MODEL = "sentiment-classifier"


@pytest.fixture()
def production(cli: Callable[..., Any], trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Registry:
    for key, value in {"MIN_LABELS": "20", "GOLDEN_SAMPLES": "40", "LEARNING_RATE": "0.001"}.items():
        monkeypatch.setenv(f"SENTOPS_RETRAIN__{key}", value)
    assert cli("promote", "--version", "1").exit_code == 0
    return Registry(load_settings())


def _serve(settings: Settings, version: int, texts: list[str], model: SentimentModel | None = None) -> list[str]:
    """Rows of ``texts`` served by ``version``; with ``model``, its served embeddings."""
    pred = None
    if model is not None:
        pred = embed_as_served(model, texts, settings.serve.backend, max_tokens=settings.serve.batch_max_tokens)
    store = InferenceStore(settings.store_url)
    recs = [
        PredictionRecord(
            model_name=MODEL,
            model_version=version,
            text=t,
            prediction=None if pred is None else int(pred.labels[i]),
            probability=None if pred is None else float(pred.probabilities[i, 1]),
            confidence=None if pred is None else float(pred.confidences[i]),
            embedding=None if pred is None or pred.embeddings is None else pred.embeddings[i],
            backend=settings.serve.backend,
        )
        for i, t in enumerate(texts)
    ]
    store.add_predictions(recs)
    store.close()
    return [r.id for r in recs]


def _mix(tweets: list[str], reviews: list[str]) -> list[str]:
    """Tweets and reviews interleaved (7 tweets to 3 reviews)."""
    out, t, r = [], iter(tweets), iter(reviews)
    for i in range(len(tweets) + len(reviews)):
        out.append(next(r) if i % 10 in (2, 5, 8) else next(t))
    return out


def test_split_sizes_share_scarce_texts() -> None:
    assert split_sizes(10_000, 1000, 4000) == (1000, 4000)
    assert split_sizes(3000, 1000, 4000) == (1000, 2000)
    assert split_sizes(MIN_SERVED, 1000, 4000) == (100, 100)  # scarce: shared evenly


def test_retrained_reference_is_the_served_traffic(cli: Callable[..., Any], production: Registry) -> None:
    settings = load_settings()
    tweets, imdb = load_corpus("tweets"), load_corpus("imdb")
    served = _mix(tweets.train.texts[:280], imdb.test.texts[1000:1120])  # 70 % tweets, 30 % reviews
    ids = _serve(settings, 1, served)
    # a person labels the first 100 tweets served (the retrain's window starts at the first)
    labeled = tweets.train.texts[:100]
    store = InferenceStore(settings.store_url)
    for rid, text in zip(ids, served, strict=True):
        if text in labeled:
            assert store.set_feedback(rid, int(tweets.train.labels[labeled.index(text)]))
    store.close()

    result = cli("retrain", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    ref_info = out["reference"]
    assert ref_info["source"] == "served" and ref_info["served_texts"] == 400
    assert (ref_info["reference"], ref_info["calibration"]) == (40, 200)
    run = production.client.get_run(out["run_id"])
    assert run.data.tags[SOURCE_TAG] == "served"

    v2 = production.load_model(2)
    with tempfile.TemporaryDirectory() as tmp:
        ref = download_reference(production, out["run_id"], Path(tmp), settings.serve.backend)
    assert ref.meta.source == "served" and ref.meta.data == f"served traffic of {MODEL} v1"
    assert ref.meta.count == 40 and ref.meta.calibration_count == 200 and ref.calibration is not None
    # every reference and calibration row is a distinct served text, drawn uniformly: the
    # served mix (30 % reviews) and the labeled tweets in their share (25 %) too, since the
    # texts left unlabeled by an active selection are not a sample of the traffic
    emb = embed_as_served(v2, served, settings.serve.backend, max_tokens=settings.serve.batch_max_tokens)
    assert emb.embeddings is not None
    drawn = np.vstack([ref.embeddings, ref.calibration])
    d2 = ((drawn[:, None, :] - emb.embeddings[None, :, :]) ** 2).sum(axis=2)
    nearest = d2.argmin(axis=1).tolist()
    assert np.sqrt(d2.min(axis=1)).max() < 1e-3 and len(set(nearest)) == 240
    reviews = set(imdb.test.texts[1000:1120])
    assert 0.2 <= np.mean([served[i] in reviews for i in nearest]) <= 0.4
    assert 0.12 <= np.mean([served[i] in labeled for i in nearest]) <= 0.38

    # v2 serves more of the same mix: no drift; then a shift away from it: drift
    assert cli("promote", "--version", "2").exit_code == 0
    _serve(settings, 2, _mix(tweets.test.texts[:105], imdb.test.texts[2000:2045]), v2)
    checked = load_settings(overrides={"drift.window": 150, "drift.method": "calibrated"})
    same = run_drift_check(checked, production, version=2, record=False)
    assert same.method == "calibrated" and not same.drift, (same.p_value, same.calibrated)
    _serve(settings, 2, load_corpus("rotten_tomatoes").test.texts[:150], v2)
    moved = run_drift_check(checked, production, version=2, record=False)
    assert moved.method == "calibrated" and moved.drift, (moved.p_value, moved.calibrated)
