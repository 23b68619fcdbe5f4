"""Accuracy benchmark: the default CPU config (or another YAML) trained end to end.

    python benchmarks/accuracy.py                       # default config → "cpu" entry
    python benchmarks/accuracy.py --config configs/full.yaml --key gpu

Writes the section ``--key`` of benchmarks/results/accuracy.json and prints the entry. Training
time is the Trainer's wall time; evaluation runs on the full 5,000-review golden split.
"""

from __future__ import annotations

import json
import tempfile
import time

import harness
import torch
from harness import load_average, write_result

from sentiment_ops.cli.common import quiet_third_party
from sentiment_ops.config import load_settings
from sentiment_ops.jobs.train import train


def main() -> None:
    ap = harness.parser(__doc__, "accuracy.json", "where the model is trained (default: a new temp folder)")
    ap.add_argument("--config", default=None)
    ap.add_argument("--key", default="cpu", help="the section of the results file")
    args = ap.parse_args()
    quiet_third_party()
    home = args.home or tempfile.mkdtemp(prefix="sentops-bench-")
    settings = load_settings(args.config, {"home": home, "train.eval_samples": None})
    load_before = load_average()
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
        "torch": torch.__version__,
    }
    entry = write_result(args.out, entry, load_before, section=args.key, env_prefixes=("SENTOPS_TRAIN__",))
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
