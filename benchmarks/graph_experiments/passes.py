"""How to cut micro-batches into forward passes on CPU (the ONNX int8 serving model).

Per-text time by texts per pass, for short (Rotten Tomatoes, sorted by length) and long
(IMDB golden, 256 tokens head + tail) texts, and throughput of one 2-thread pass at a time
vs two 1-thread passes side by side. These figures set ``serve.batch_max_tokens`` and
``serve.inference_workers``. Writes the section ``passes`` of benchmarks/results/graph.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from harness import load_average, write_result

from sentiment_ops.config import load_settings
from sentiment_ops.data import golden_test, load_corpus
from sentiment_ops.inference.onnx import OnnxPredictor
from sentiment_ops.tracking.registry import Registry


def texts_per_s(predictor: OnnxPredictor, ids: list[list[int]], per_pass: int, seconds: float) -> float:
    predictor.forward_ids(ids[:per_pass])
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        at = n % (len(ids) - per_pass)
        predictor.forward_ids(ids[at : at + per_pass])
        n += per_pass
    return n / (time.perf_counter() - start)


def side_by_side(predictor: OnnxPredictor, ids: list[list[int]], per_pass: int, seconds: float) -> float:
    counts: list[float] = []
    threads = [
        threading.Thread(target=lambda: counts.append(texts_per_s(predictor, ids, per_pass, seconds))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0)


def run(args: argparse.Namespace) -> None:
    load_before = load_average()
    settings = load_settings(overrides={"home": args.home})
    model = Registry(settings).load_model(args.version)
    assert model is not None
    cache = Path(tempfile.mkdtemp(prefix="sentops-onnx-")) / "cache"
    two = OnnxPredictor.from_model(model, cache, threads=2)
    one = OnnxPredictor.from_model(model, cache, threads=1)
    short = sorted(model.encode(load_corpus("rotten_tomatoes").test.texts[:256]), key=len)
    long = model.encode(golden_test(64).texts)
    out: dict[str, object] = {"ms_per_text_2_threads": {}}
    table = out["ms_per_text_2_threads"]
    assert isinstance(table, dict)
    for name, ids, sizes in (("short", short, (1, 4, 8, 16, 32)), ("long", long, (1, 2, 4, 8))):
        table[name] = {f"{k}_per_pass": round(1000 / texts_per_s(two, ids, k, args.seconds), 2) for k in sizes}
    out["texts_per_s"] = {
        "short_12_per_pass": {
            "one_pass_2_threads": round(texts_per_s(two, short, 12, args.seconds), 1),
            "two_passes_1_thread": round(side_by_side(one, short, 12, args.seconds), 1),
        },
        "long_1_per_pass": {
            "one_pass_2_threads": round(texts_per_s(two, long, 1, args.seconds), 1),
            "two_passes_1_thread": round(side_by_side(one, long, 1, args.seconds), 1),
        },
    }
    out.update(
        {
            "model_version": args.version,
        }
    )
    out = write_result(args.out, out, load_before, section="passes")
    print(json.dumps(out, indent=2))
