"""The model owns its text normalisation (``sentiment_ops.textnorm``): raw client text with
``<br />`` markup and stray whitespace gets the same answer and embedding as the cleaned
text training saw, through the pyfunc, the server (both backends) and drift monitoring;
the store keeps what the client sent; legacy models (no spec saved) load with the cleaner
they were trained with."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from serve_support import Server, promote, serve_settings, start_server

from sentiment_ops import textnorm
from sentiment_ops.data import as_shipped, clean_text, golden_test, load_corpus
from sentiment_ops.errors import ModelLoadError
from sentiment_ops.modeling import META_FILE, SentimentModel
from sentiment_ops.tracking.pyfunc import ARTIFACT_KEY, SentimentPyfunc, load_pyfunc

RAW = [
    "A moving film.<br /><br />The   cast is superb<BR>and the ending\n\tworks.",
    "  Dull <br/>and far too long.<br /><br />Avoid.  ",
    "ok",
]
CLEAN = [clean_text(t) for t in RAW]


# -- the normaliser ------------------------------------------------------------------------
def test_normaliser_specs_and_idempotence() -> None:
    current = textnorm.get()
    assert current.spec == textnorm.CURRENT == textnorm.NormalizerSpec("sentops.clean", 1)
    assert (
        current(RAW)
        == CLEAN
        == ["A moving film. The cast is superb and the ending works.", "Dull and far too long. Avoid.", "ok"]
    )
    assert current(current(RAW)) == current(RAW)  # normalising clean text changes nothing
    nested = "a <br<br />> b"  # one pass of the corpus cleaner leaves "<br >"
    assert textnorm.clean_once(nested) == "a <br > b"
    assert current([nested]) == current(current([nested])) == ["a b"]
    assert textnorm.from_meta({}).spec == textnorm.LEGACY  # no spec saved: legacy
    assert textnorm.from_meta({"text_normalizer": {"name": "identity", "version": 1}})(RAW) == RAW
    with pytest.raises(ModelLoadError, match="unknown text normaliser"):
        textnorm.get({"name": "sentops.clean", "version": 99})
    with pytest.raises(ModelLoadError, match="malformed"):
        textnorm.get({"version": 1})


def test_clean_is_the_fixed_point_of_the_corpus_cleaner_in_linear_time() -> None:
    """``sentops.clean`` v1 equals repeating the one-pass cleaner until nothing changes (on
    random strings of markup pieces), and deeply nested markup costs linear time."""
    import random
    import time

    def fixed_point(text: str) -> str:
        out = textnorm.clean_once(text)
        while (again := textnorm.clean_once(out)) != out:
            out = again
        return out

    rng = random.Random(0)
    pieces = ["<", "b", "r", "B", "/", ">", " ", "\n", "\t", "x", "<br", "<br />", "\u00a0"]
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 25)))
        assert textnorm.clean(text) == fixed_point(text) == textnorm.clean(textnorm.clean(text)), repr(text)
    depth = 20_000 // 7  # a request-sized text: the repeated pass would need ~depth passes
    nested = "x " + "<br" * depth + " />" + ">" * (depth - 1) + " y"
    start = time.perf_counter()
    assert textnorm.clean(nested) == "x y"
    assert time.perf_counter() - start < 0.5


def test_corpus_splits_and_hashes_unchanged() -> None:
    """The corpus loader still cleans once: the golden hold-out hash is the frozen one, and
    the texts as shipped clean (with the model's normaliser) to exactly the split's texts."""
    golden = golden_test()
    assert golden.hash == "b2648e3cb608332c"
    raw = as_shipped("imdb", golden.texts[:300])
    assert sum("<br" in t for t in raw) > 100
    assert textnorm.get()(raw) == golden.texts[:300]


# -- the model and the logged pyfunc --------------------------------------------------------
def _predict_pyfunc(model: Any, texts: list[str]) -> pd.DataFrame:
    return model.predict(pd.DataFrame({"text": texts}), params={"return_embedding": True})


def test_logged_model_records_and_applies_its_normaliser(home_with_model: dict[str, Any], plain_mlflow: str) -> None:
    model = mlflow.pyfunc.load_model("models:/sentiment-classifier/1")
    assert model.metadata.metadata["sentops"]["text_normalizer"] == {"name": "sentops.clean", "version": 1}
    inner = load_pyfunc("models:/sentiment-classifier/1").model
    assert inner is not None and inner.normalizer.spec == textnorm.CURRENT
    raw, clean = _predict_pyfunc(model, RAW), _predict_pyfunc(model, CLEAN)
    np.testing.assert_allclose(raw["probability"], clean["probability"], rtol=0, atol=1e-7)
    np.testing.assert_allclose(np.array(raw["embedding"].tolist()), np.array(clean["embedding"].tolist()), atol=1e-6)


def _saved(tiny_model_dir: Path, dest: Path, spec: dict[str, Any] | None) -> Path:
    """A saved model folder whose sentops.json holds ``spec``, or none (a legacy model)."""
    folder = SentimentModel.from_dir(tiny_model_dir, max_length=64).save(dest)
    meta = json.loads((folder / META_FILE).read_text())
    meta.pop(textnorm.META_KEY)
    if spec is not None:
        meta[textnorm.META_KEY] = spec
    (folder / META_FILE).write_text(json.dumps(meta))
    return folder


def test_legacy_model_loads_with_the_cleaner_it_was_trained_with(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A pyfunc logged before specs were recorded (no text_normalizer anywhere) loads with
    the legacy cleaner: raw and cleaned text give the same answer, as in training."""
    folder = _saved(tiny_model_dir, tmp_path / "hf", None)
    assert textnorm.META_KEY not in json.loads((folder / META_FILE).read_text())
    mlflow.pyfunc.save_model(
        str(tmp_path / "legacy"), python_model=SentimentPyfunc(), artifacts={ARTIFACT_KEY: str(folder)}
    )
    legacy = mlflow.pyfunc.load_model(str(tmp_path / "legacy"))
    inner = load_pyfunc(str(tmp_path / "legacy")).model
    assert inner is not None and inner.normalizer.spec == textnorm.LEGACY
    raw, clean = _predict_pyfunc(legacy, RAW), _predict_pyfunc(legacy, CLEAN)
    np.testing.assert_allclose(raw["probability"], clean["probability"], rtol=0, atol=1e-7)
    # re-saving keeps the legacy spec, now written down
    again = SentimentModel.from_dir(inner.save(tmp_path / "resaved"))
    assert again.normalizer.spec == textnorm.LEGACY


def test_the_saved_spec_is_what_runs(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A model saved with ``identity`` sees the markup: the spec, not a constant, decides."""
    model = SentimentModel.from_dir(_saved(tiny_model_dir, tmp_path / "hf", {"name": "identity", "version": 1}))
    assert model.normalizer.spec == textnorm.NormalizerSpec("identity", 1)
    assert model.encode(RAW[:1]) != model.encode(CLEAN[:1])
    unknown = _saved(tiny_model_dir, tmp_path / "hf2", {"name": "sentops.clean", "version": 99})
    with pytest.raises(ModelLoadError, match="unknown text normaliser"):
        SentimentModel.from_dir(unknown)


# -- the server, both backends ------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_server_normalises_and_stores_what_the_client_sent(
    backend: str, home_with_model: dict[str, Any], running: list[Server]
) -> None:
    promote(1)
    srv = start_server(serve_settings(backend=backend))
    running.append(srv)
    with srv.client() as c:
        r = c.post("/predict/batch", json={"texts": RAW + CLEAN})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        single = c.post("/predict", json={"text": RAW[0]}).json()
    n = len(RAW)
    raw_p = np.array([p["probability"] for p in preds[:n]])
    clean_p = np.array([p["probability"] for p in preds[n:]])
    np.testing.assert_allclose(raw_p, clean_p, rtol=0, atol=1e-6)
    assert [p["text"] for p in preds[:n]] == RAW  # the answer echoes what was sent
    assert abs(single["probability"] - clean_p[0]) < (1e-6 if backend == "torch" else 5e-3)
    srv.state.writer.flush()
    store = srv.state.store
    rows = [store.get(p["id"]) for p in preds]
    assert [r.text for r in rows[:n]] == RAW  # the store keeps the client's text
    raw_e = np.vstack([r.embedding for r in rows[:n]])
    clean_e = np.vstack([r.embedding for r in rows[n:]])
    np.testing.assert_allclose(raw_e, clean_e, atol=1e-5)


# -- drift on raw traffic -----------------------------------------------------------------
def test_raw_unshifted_traffic_does_not_drift(
    cli: Callable[..., Any], home_with_model: dict[str, Any], running: list[Server]
) -> None:
    """IMDB reviews as the corpus file ships them (markup included), sent through the API
    (ONNX, the default backend), checked against the reference of cleaned held-out reviews:
    no drift. Before the model owned its normalisation, the server embedded the markup and
    every such window drifted."""
    promote(1)
    srv = start_server(serve_settings(backend="onnx"))
    running.append(srv)
    test = load_corpus("imdb").test.texts[:1500]
    raw = [t for t in as_shipped("imdb", test) if "<br" in t[:200].lower()][:120]
    assert len(raw) == 120
    with srv.client() as c:
        for start in range(0, len(raw), 20):
            r = c.post("/predict/batch", json={"texts": raw[start : start + 20]})
            assert r.status_code == 200, r.text
    srv.stop()  # graceful: queued rows reach the store

    result = cli("drift", "--window", "120", "--json", "--show-texts")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_rows"] == 120 and report["drift"] is False
    assert {f["text"] for f in report["farthest"]} <= set(raw)  # the store's raw texts


# -- retraining reads raw texts from the store ----------------------------------------------
def test_feedback_counts_a_text_once_whatever_its_markup(tiny_env: dict[str, str]) -> None:
    """The same review labelled once raw and once cleaned is one text to the model: one
    training row, never one copy in training and one in the new-domain hold-out."""
    from sentiment_ops.config import load_settings
    from sentiment_ops.feedback_dataset import feedback_data
    from sentiment_ops.store import InferenceStore, PredictionRecord

    tweets = load_corpus("tweets").train
    texts, labels = tweets.texts[:30], tweets.labels[:30].tolist()
    variants = [t.replace(" ", "  <br /> ", 1) + "  " for t in texts[:10]]  # same text, raw form
    settings = load_settings(overrides={"retrain.min_labels": 10})
    store = InferenceStore(settings.store_url)
    recs = [
        PredictionRecord(settings.mlflow.model_name, 1, text=t, prediction=0, probability=0.5, confidence=0.5)
        for t in texts + variants
    ]
    store.add_predictions(recs)
    for rec, label in zip(recs, labels + labels[:10], strict=True):
        assert store.set_feedback(rec.id, int(label))
    fb = feedback_data(store, settings)
    store.close()
    assert fb.real == 30
    seen = textnorm.get()(fb.train.texts + fb.holdout.texts)
    assert len(seen) == len(set(seen)) == 30
