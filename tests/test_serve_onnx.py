"""The ONNX Runtime int8 backend: exported once per version, cached, and serving the same
answers (label, probability, embedding) as torch within quantisation error."""

from __future__ import annotations

from typing import Any

import numpy as np
from serve_support import Server, promote, serve_settings, start_server

from sentiment_ops.config import load_settings
from sentiment_ops.pyfunc import load_pyfunc
from sentiment_ops.serving.onnx_backend import ONNX_FILE, OnnxPredictor

TEXTS = [
    "A moving, beautifully acted film.",
    "Dull and far too long.",
    "The plot makes no sense but the music is wonderful. " * 10,
    "ok",
]


def test_onnx_backend_serves_and_caches(home_with_model: dict[str, Any], running: list[Server]) -> None:
    promote(1)
    srv = start_server(serve_settings(backend="onnx"))
    running.append(srv)
    with srv.client() as c:
        info = c.get("/model").json()
        assert info["backend"] == "onnx" and info["version"] == 1
        r = c.post("/predict/batch", json={"texts": TEXTS})
        assert r.status_code == 200, r.text
        onnx_preds = r.json()["predictions"]
        assert 'backend="onnx"' in c.get("/metrics").text
    srv.stop()
    cached = list((load_settings().home / "serving-cache").glob(f"*/{ONNX_FILE}"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns

    srv2 = start_server(serve_settings(backend="torch"))
    running.append(srv2)
    with srv2.client() as c:
        torch_preds = c.post("/predict/batch", json={"texts": TEXTS}).json()["predictions"]
    srv2.stop()
    for o, t in zip(onnx_preds, torch_preds, strict=True):
        assert abs(o["probability"] - t["probability"]) < 0.02

    srv3 = start_server(serve_settings(backend="onnx"))  # loads from the cache, no new export
    running.append(srv3)
    with srv3.client() as c:
        assert c.post("/predict", json={"text": "fine"}).status_code == 200
    assert cached[0].stat().st_mtime_ns == mtime


def test_onnx_gives_logits_and_embedding_in_one_pass(home_with_model: dict[str, Any], tmp_path: Any) -> None:
    model = load_pyfunc("models:/sentiment-classifier/1").model
    assert model is not None
    onnx = OnnxPredictor.from_model(model, tmp_path / "cache", threads=1)
    ids = model.encode(TEXTS)
    lt, et = model.forward_ids(ids)
    lo, eo = onnx.forward_ids(ids)
    assert lo.shape == lt.shape == (4, 2) and eo.shape == et.shape == (4, 32)
    np.testing.assert_allclose(lo, lt, atol=0.05)
    cos = np.sum(et * eo, 1) / np.linalg.norm(et, axis=1) / np.linalg.norm(eo, axis=1)
    assert cos.min() > 0.95
    # padding barely changes a text's answer: pooling and attention honour the mask; what
    # is left is dynamic int8 quantisation, whose activation scale spans the whole batch
    alone, alone_emb = onnx.forward_ids([ids[3]])
    np.testing.assert_allclose(alone[0], lo[3], atol=5e-3)
    np.testing.assert_allclose(alone_emb[0], eo[3], atol=5e-2)
