"""Serving backends compared on the served model: torch fp32 vs ONNX Runtime int8.

Loads the version behind ``--alias`` (default production; else ``--version``) through the
logged MLflow model, scores the first ``--samples`` golden reviews with both backends
(same tokenisation, batches of 32 sorted by length), and measures single-text latency on
short (Rotten Tomatoes) and long (IMDB) texts. ONNX int8 may become the default serving
backend only if its golden accuracy is within 0.5 points of fp32. Also reports how far
int8 moves the pooled embeddings, since drift monitoring compares them with a reference
computed in fp32. Writes the section ``backends`` of benchmarks/results/graph.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from harness import load_average, write_result

from sentiment_ops.config import load_settings
from sentiment_ops.data import golden_test, load_corpus
from sentiment_ops.inference import OnnxPredictor, forward_grouped
from sentiment_ops.modeling import set_cpu_threads
from sentiment_ops.tracking.registry import Registry

MAX_GAP_POINTS = 0.5


def latency_ms(predictor, ids: list[list[int]], seconds: float = 5.0) -> dict[str, float]:  # type: ignore[no-untyped-def]
    times = []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        t = time.perf_counter()
        predictor.forward_ids([ids[i % len(ids)]])
        times.append((time.perf_counter() - t) * 1000)
        i += 1
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "mean_ms": round(float(np.mean(times)), 2)}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--alias", default="production")
    ap.add_argument("--version", type=int, default=None)
    ap.add_argument("--samples", type=int, default=2000)


def run(args: argparse.Namespace) -> None:
    load_before = load_average()
    settings = load_settings(overrides={"home": args.home})
    set_cpu_threads(None)
    registry = Registry(settings)
    version = args.version or registry.alias_version(args.alias) or 1
    model = registry.load_model(version)
    assert model is not None
    onnx = OnnxPredictor.from_model(model, Path(tempfile.mkdtemp(prefix="sentops-onnx-")) / "cache")

    golden = golden_test(args.samples)
    ids = model.encode(list(golden.texts))
    out: dict[str, dict[str, float]] = {}
    preds = {}
    for name, predictor in (("torch_fp32", model), ("onnx_int8", onnx)):
        t = time.perf_counter()
        pred = forward_grouped(predictor, ids, max_size=32, factor=None)  # sorted by length, 32 a pass
        seconds = time.perf_counter() - t
        preds[name] = pred
        out[name] = {
            "golden_accuracy": round(float(np.mean(pred.labels == golden.labels)), 4),
            "texts_per_s_batch32": round(len(ids) / seconds, 1),
        }
    fp, q = preds["torch_fp32"], preds["onnx_int8"]
    assert fp.embeddings is not None and q.embeddings is not None
    cos = np.sum(fp.embeddings * q.embeddings, 1) / (
        np.linalg.norm(fp.embeddings, axis=1) * np.linalg.norm(q.embeddings, axis=1)
    )
    c_fp, c_q = fp.embeddings.mean(0), q.embeddings.mean(0)
    centroid_distance = 1 - float(c_fp @ c_q / (np.linalg.norm(c_fp) * np.linalg.norm(c_q)))

    short_ids = model.encode(load_corpus("rotten_tomatoes").test.texts[:200])
    long_ids = [ids[i] for i in range(min(200, len(ids)))]
    for name, predictor in (("torch_fp32", model), ("onnx_int8", onnx)):
        out[name]["short_single"] = latency_ms(predictor, short_ids)  # type: ignore[assignment]
        out[name]["long_single"] = latency_ms(predictor, long_ids)  # type: ignore[assignment]

    gap = (out["torch_fp32"]["golden_accuracy"] - out["onnx_int8"]["golden_accuracy"]) * 100
    result = {
        **out,
        "golden_samples": len(ids),
        "model_version": version,
        "max_length": model.max_length,
        "accuracy_gap_points": round(gap, 2),
        "onnx_within_0_5_points": bool(gap <= MAX_GAP_POINTS),
        "label_agreement": round(float(np.mean(fp.labels == q.labels)), 4),
        "mean_abs_probability_diff": round(float(np.mean(np.abs(fp.probabilities - q.probabilities))), 4),
        "embedding_cosine_mean": round(float(cos.mean()), 4),
        "embedding_cosine_p01": round(float(np.percentile(cos, 1)), 4),
        "centroid_cosine_distance_fp32_vs_int8": round(centroid_distance, 5),
        "torch": torch.__version__,
    }
    result = write_result(args.out, result, load_before, section="backends")
    print(json.dumps(result, indent=2))
