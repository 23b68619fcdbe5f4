"""Accuracy benchmark: the default CPU config (or another YAML) trained end to end.

    python benchmarks/accuracy.py                       # default config → "cpu" entry
    python benchmarks/accuracy.py --config configs/full.yaml --key gpu

Writes benchmarks/results/accuracy.json (merging keys) and prints the entry. Training
time is the Trainer's wall time; evaluation runs on the full 5,000-review golden split.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from sentiment_ops.cli.common import quiet_third_party
from sentiment_ops.config import load_settings
from sentiment_ops.jobs.train import train

RESULTS = Path(__file__).parent / "results" / "accuracy.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--key", default="cpu")
    ap.add_argument("--home", default=None)
    args = ap.parse_args()
    quiet_third_party()
    home = args.home or tempfile.mkdtemp(prefix="sentops-bench-")
    settings = load_settings(args.config, {"home": home, "train.eval_samples": None})
    load_before = os.getloadavg()
    start = time.perf_counter()
    result = train(settings)
    total = time.perf_counter() - start
    m = result.metrics
    entry = {
        "accuracy": round(m["golden_accuracy"], 4),
        "f1": round(m["golden_f1"], 4),
        "roc_auc": round(m.get("golden_roc_auc", float("nan")), 4),
        "train_seconds": round(result.train_seconds, 1),
        "total_seconds": round(total, 1),
        "golden_size": int(result.data.get("test_size", 0)) if settings.train.data == "imdb" else None,
        "config": {
            k: getattr(settings.train, k)
            for k in (
                "base_model",
                "epochs",
                "learning_rate",
                "batch_size",
                "max_length",
                "head_tokens",
                "length_buckets",
                "max_samples",
            )
        },
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "date": datetime.now(UTC).date().isoformat(),
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
        "command": " ".join(
            [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("SENTOPS_TRAIN__")]
            + ["python benchmarks/accuracy.py"]
            + (["--config", args.config] if args.config else [])
            + ["--key", args.key]
        ),
    }
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[args.key] = entry
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
