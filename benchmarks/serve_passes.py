"""How to cut micro-batches into forward passes on CPU (the ONNX int8 serving model).

    flock /tmp/sentops-bench.lock python benchmarks/serve_passes.py --home HOME [--version 1]

Per-text time by texts per pass, for short (Rotten Tomatoes, sorted by length) and long
(IMDB golden, 256 tokens head + tail) texts, and throughput of one 2-thread pass at a time
vs two 1-thread passes side by side. These figures set ``serve.batch_max_tokens`` and
``serve.inference_workers``. Writes benchmarks/results/serve_passes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from sentiment_ops.cli.common import quiet_third_party
from sentiment_ops.config import load_settings
from sentiment_ops.data import golden_test, load_corpus
from sentiment_ops.inference.onnx import OnnxPredictor
from sentiment_ops.tracking.registry import Registry

RESULTS = Path(__file__).parent / "results" / "serve_passes.json"


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", required=True)
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    quiet_third_party()
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
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "date": datetime.now(UTC).date().isoformat(),
            "command": "python benchmarks/serve_passes.py --home HOME",
        }
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
