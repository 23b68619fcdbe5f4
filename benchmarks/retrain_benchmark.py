"""Retraining benchmark: real labels vs pseudo-labels after a shift to tweets.

Starting from a trained, registered model (version 1 of a sentops home, e.g. the one
``benchmarks/accuracy.py`` leaves), it simulates what the product sees after the shift:
the production model serves ``--labels`` tweets (logged in the inference store with its
predictions), then

* ``pseudo``: ``retrain(pseudo_label_threshold=T)`` on those unlabeled rows (the model's
  confident predictions used as labels: what the seed system did),
* ``labels``: a person labels the same rows (the corpus has the true labels) and
  ``retrain()`` runs on the real labels,

both from version 1, with replay. Every model is scored on a fixed tweets hold-out
(first ``--tweets-eval`` rows of the frozen tweets test split, never used for training)
and on the golden IMDB hold-out (first ``--golden`` rows).

    flock /tmp/sentops-bench.lock python benchmarks/retrain_benchmark.py --source-home /tmp/bench-acc

The source home is copied (never written): new runs go to their own experiment, whose
artifacts live in the copy. Writes benchmarks/results/retrain.json (merging keys).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import torch
from harness import load_average, write_result

from sentiment_ops.cli.common import quiet_third_party
from sentiment_ops.config import load_settings
from sentiment_ops.data import golden_test, load_corpus
from sentiment_ops.jobs.retrain import retrain
from sentiment_ops.jobs.steps import evaluate
from sentiment_ops.store import InferenceStore, PredictionRecord
from sentiment_ops.tracking.registry import Registry

TRAFFIC_SEED = 11


def _scores(model: Any, tweets_eval: Any, golden: Any, batch_size: int) -> dict[str, float]:
    t = evaluate(model, tweets_eval, batch_size)[0]
    g = evaluate(model, golden, batch_size)[0]
    return {"tweets_f1": t["f1"], "tweets_acc": t["accuracy"], "imdb_acc": g["accuracy"]}


def _entry(before: dict[str, float], after: dict[str, float], result: Any, seconds: float) -> dict[str, Any]:
    r4 = lambda x: round(float(x), 4)  # noqa: E731
    return {
        "tweets_f1_before": r4(before["tweets_f1"]),
        "tweets_f1_after": r4(after["tweets_f1"]),
        "tweets_f1_gain": r4(after["tweets_f1"] - before["tweets_f1"]),
        "tweets_acc_before": r4(before["tweets_acc"]),
        "tweets_acc_after": r4(after["tweets_acc"]),
        "imdb_acc_before": r4(before["imdb_acc"]),
        "imdb_acc_after": r4(after["imdb_acc"]),
        "imdb_acc_drop": r4(before["imdb_acc"] - after["imdb_acc"]),
        "version": result.version,
        "labels_real": result.data["labels_real"],
        "labels_pseudo": result.data["labels_pseudo"],
        "train_new_rows": result.data["labels_train"],
        "holdout_rows": result.data["labels_holdout"],
        "replay_rows": result.data["replay_size"],
        "gate_passed": result.gate.passed,
        "gate_reasons": result.gate.reasons,
        "train_seconds": round(result.train_seconds, 1),
        "retrain_seconds": round(seconds, 1),
    }


def main() -> None:
    ap = harness.parser(__doc__, "retrain.json", "Where the copy goes (default: a new temp folder).")
    ap.add_argument("--source-home", default="/tmp/bench-acc", help="Trained home to copy (never modified).")
    ap.add_argument("--config", default=None)
    ap.add_argument("--key", default="cpu")
    ap.add_argument("--labels", type=int, default=1000, help="Served tweets that get labeled.")
    ap.add_argument("--epochs", type=float, default=None)
    ap.add_argument("--learning-rate", type=float, default=None)
    ap.add_argument("--replay-ratio", type=float, default=None)
    ap.add_argument("--pseudo-threshold", type=float, default=0.9)
    ap.add_argument("--tweets-eval", type=int, default=500)
    ap.add_argument("--golden", type=int, default=1000)
    ap.add_argument("--version", type=int, default=1, help="Version of the source home to start from.")
    ap.add_argument("--scenarios", default="pseudo,labels", help="Which of pseudo,labels to run.")
    args = ap.parse_args()
    load_before = load_average()
    quiet_third_party()
    torch.set_num_threads(os.cpu_count() or 1)

    home = Path(args.home or tempfile.mkdtemp(prefix="retrain-bench-")) / "home"
    shutil.copytree(args.source_home, home)
    settings = load_settings(
        args.config,
        {
            "home": str(home),
            "mlflow.experiment": "retrain-benchmark",  # artifacts in the copy, not the source
            "retrain.epochs": args.epochs,
            "retrain.learning_rate": args.learning_rate,
            "retrain.golden_samples": args.golden,
            "retrain.min_labels": 10,
            "retrain.replay_ratio": args.replay_ratio,
        },
    )
    registry = Registry(settings)
    registry.promote(args.version)  # serve.alias
    bs = settings.train.eval_batch_size

    tweets = load_corpus("tweets")
    tweets_eval = tweets.test.head(args.tweets_eval)
    golden = golden_test(args.golden)
    traffic = tweets.train.sample(args.labels, seed=TRAFFIC_SEED)

    start = time.perf_counter()
    model = registry.load_model(args.version)
    before = _scores(model, tweets_eval, golden, bs)
    served = model.predict(traffic.texts, with_embeddings=False)
    print(f"before: {before}  ({time.perf_counter() - start:.0f} s)", flush=True)

    store = InferenceStore(settings.store_url)
    records = [
        PredictionRecord(
            model_name=settings.mlflow.model_name,
            model_version=args.version,
            alias=settings.serve.alias,
            text=text,
            prediction=int(served.labels[i]),
            probability=float(served.probabilities[i, 1]),
            confidence=float(served.confidences[i]),
        )
        for i, text in enumerate(traffic.texts)
    ]
    store.add_predictions(records)

    scenarios = set(args.scenarios.split(","))
    entries: dict[str, Any] = {}
    if "pseudo" in scenarios:
        t0 = time.perf_counter()
        pseudo_settings = settings.model_copy(deep=True)
        pseudo_settings.retrain.pseudo_label_threshold = args.pseudo_threshold
        pseudo = retrain(pseudo_settings)
        seconds = time.perf_counter() - t0
        after = _scores(registry.load_model(pseudo.version), tweets_eval, golden, bs)
        entries["pseudo"] = {**_entry(before, after, pseudo, seconds), "threshold": args.pseudo_threshold}
        print(f"pseudo: {entries['pseudo']}", flush=True)
    if "labels" in scenarios:  # a person labels the served tweets (the corpus has the labels)
        statuses = store.set_feedback_many([(r.id, int(lbl)) for r, lbl in zip(records, traffic.labels, strict=True)])
        assert statuses.count("applied") == len(records)
        t0 = time.perf_counter()
        labels = retrain(settings)
        seconds = time.perf_counter() - t0
        after = _scores(registry.load_model(labels.version), tweets_eval, golden, bs)
        entries["labels"] = _entry(before, after, labels, seconds)
        print(f"labels: {entries['labels']}", flush=True)
    store.close()

    lab = entries.get("labels")
    entry = {
        **entries,
        "target": {"tweets_f1_gain_min": 0.08, "imdb_acc_drop_max": 0.01},
        "target_met": None if lab is None else lab["tweets_f1_gain"] >= 0.08 and lab["imdb_acc_drop"] <= 0.01,
        "served_tweets": args.labels,
        "pseudo_agreement_with_truth": round(float((served.labels == traffic.labels).mean()), 4),
        "tweets_eval_size": len(tweets_eval),
        "golden_size": len(golden),
        "config": {
            "epochs": settings.retrain.epochs,
            "learning_rate": settings.retrain.learning_rate,
            "replay_ratio": settings.retrain.replay_ratio if args.replay_ratio is None else args.replay_ratio,
            "holdout_fraction": settings.retrain.holdout_fraction,
            "batch_size": settings.train.batch_size,
            "max_length": model.max_length,
            "head_tokens": model.head_tokens,
            "length_buckets": settings.retrain.length_buckets,
            "start_version_golden_accuracy": registry.get_version(args.version).golden_accuracy,
        },
        "total_seconds": round(time.perf_counter() - start, 1),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    entry = write_result(
        args.out, entry, load_before, section=args.key, env_prefixes=("SENTOPS_TRAIN__", "SENTOPS_RETRAIN__")
    )
    if args.key == "cpu" and {"labels", "pseudo"} <= set(entries):
        # The contract: labels.* and pseudo.* at the top level hold the CPU figures.
        data = json.loads(args.out.read_text())
        data["labels"], data["pseudo"] = entry["labels"], entry["pseudo"]
        args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
