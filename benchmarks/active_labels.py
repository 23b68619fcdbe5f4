"""Active labeling benchmark: how many labels each selection strategy needs after a shift.

Starting from a trained, registered model (version 1 of a sentops home, e.g. the one
``benchmarks/accuracy.py`` leaves; ``--quick`` trains a tiny one itself), the production
model serves ``--pool`` tweets (logged in the inference store with its predictions and the
embeddings the serving backend computes, as ``sentops serve`` logs them). Then, for each
seed, strategy (``random``, ``uncertain``, ``novel``, ``mixed``: ``sentiment_ops.labeling``)
and number of labels N:

1. the strategy chooses N of the served tweets (``choose_to_label``, the code behind
   ``sentops feedback export --select`` and the ``/label`` page),
2. a person labels them (the corpus holds the true labels),
3. ``retrain()`` fine-tunes production on them with replay, exactly as ``sentops retrain``,
4. the candidate is scored on a fixed tweets hold-out (first ``--tweets-eval`` rows of the
   frozen tweets test split, never served) and on the golden IMDB hold-out (first
   ``--golden`` rows), as ``benchmarks/retrain_benchmark.py`` scores,
5. the labels are removed again, so every run starts from the same unlabeled store.

``labels_to_target`` is, per strategy, the smallest N whose mean over seeds reaches
+0.08 tweet F1 with a golden accuracy drop of at most 1 point (null where no N does);
the curves keep every run. The issue's target: ``mixed`` needs at most half of ``random``.

    flock /tmp/sentops-bench.lock python benchmarks/active_labels.py --source-home /tmp/bench-acc
    python benchmarks/active_labels.py --quick      # 1 seed, 2 sizes, a tiny model: proves it runs

The source home is copied (never written). Results are written after every run
(benchmarks/results/active_labels.json, under ``--key``; a rerun with the same settings
skips the runs already there), so a long run can be stopped and resumed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import torch
from harness import load_average, write_result
from retrain_benchmark import _entry, _scores

from sentiment_ops.cli.common import quiet_third_party
from sentiment_ops.config import Settings, load_settings
from sentiment_ops.data import golden_test, load_corpus
from sentiment_ops.drift.check import embed_reference
from sentiment_ops.drift.reference import artifact_path, embed_as_served
from sentiment_ops.jobs.retrain import retrain
from sentiment_ops.labeling import Strategy
from sentiment_ops.labeling.queue import Selection, choose_to_label
from sentiment_ops.store import InferenceStore, PredictionRecord
from sentiment_ops.tracking.registry import Registry

TRAFFIC_SEED = 11  # which tweets are served (as benchmarks/retrain_benchmark.py)
TARGET = {"tweets_f1_gain_min": 0.08, "imdb_acc_drop_max": 0.01}
SIZES = (50, 100, 200, 400, 800)
QUICK: dict[str, Any] = {"sizes": (20, 40), "seeds": (0,), "pool": 300, "tweets_eval": 200, "golden": 200}


def _args() -> argparse.Namespace:
    ap = harness.parser(__doc__, "active_labels.json", "Where the copy goes (default: a new temp folder).")
    ap.add_argument("--source-home", default="/tmp/bench-acc", help="Trained home to copy (never modified).")
    ap.add_argument("--quick", action="store_true", help="1 seed, 2 sizes, a tiny model trained here.")
    ap.add_argument("--config", default=None)
    ap.add_argument("--key", default=None, help="Key in the results file (default: cpu, or quick).")
    ap.add_argument("--strategies", default=",".join(Strategy))
    ap.add_argument("--sizes", default=None, help=f"Label counts (default {','.join(map(str, SIZES))}).")
    ap.add_argument("--seeds", default=None, help="Selection seeds (default 0,1,2).")
    ap.add_argument("--pool", type=int, default=None, help="Served tweets chosen from (default 3000).")
    ap.add_argument("--backend", default="torch", choices=("torch", "onnx"), help="Serving backend (embeddings).")
    ap.add_argument("--replay-ratio", type=float, default=None)
    ap.add_argument("--epochs", type=float, default=None)
    ap.add_argument("--tweets-eval", type=int, default=None, help="Tweets hold-out size (default 500).")
    ap.add_argument("--golden", type=int, default=None, help="Golden IMDB rows (default 1000).")
    ap.add_argument("--version", type=int, default=1, help="Version of the source home to start from.")
    ap.add_argument("--render", action="store_true", help="Print the results of --key as a markdown table and exit.")
    args = ap.parse_args()
    quick: dict[str, Any] = QUICK if args.quick else {}
    args.key = args.key or ("quick" if args.quick else "cpu")
    args.strategies = [Strategy(s) for s in args.strategies.split(",")]
    args.sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(quick.get("sizes", SIZES))
    args.seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(quick.get("seeds", (0, 1, 2)))
    args.pool = args.pool or quick.get("pool", 3000)
    args.tweets_eval = args.tweets_eval or quick.get("tweets_eval", 500)
    args.golden = args.golden or quick.get("golden", 1000)
    return args


def _tiny_base_model(folder: Path) -> Path:
    """The test suite's tiny model (``modeling.save_tiny_bert``): fast enough to prove the
    benchmark runs, not to measure it."""
    from sentiment_ops.modeling import save_tiny_bert

    return save_tiny_bert(folder)


def _home(args: argparse.Namespace) -> tuple[Settings, int]:
    """The settings of the benchmark's home (a copy of the source, or a tiny model trained
    now) and the version that serves."""
    root = Path(args.home or tempfile.mkdtemp(prefix="active-labels-"))
    home = root / "home"
    overrides: dict[str, Any] = {
        "home": str(home),
        "mlflow.experiment": "active-labels-benchmark",  # artifacts in the copy, not the source
        "serve.backend": args.backend,
        "retrain.epochs": args.epochs,
        "retrain.golden_samples": args.golden,
        "retrain.min_labels": 10,
        "retrain.replay_ratio": args.replay_ratio,
        "train.reference_samples": 0,  # retrained candidates need no drift reference here
    }
    if not args.quick:
        shutil.copytree(args.source_home, home)
        return load_settings(args.config, overrides), args.version
    from sentiment_ops.jobs.train import train

    tiny = {
        "train.base_model": str(_tiny_base_model(root / "tiny-bert")),
        "train.max_samples": 200,
        "train.eval_samples": 100,
        "train.val_samples": 50,
        "train.max_length": 64,
        "train.batch_size": 16,
        "train.learning_rate": 1e-3,
        "drift.reference_samples": 100,
        "retrain.learning_rate": 1e-3,  # the tiny random model barely moves at the default 5e-5
        "retrain.epochs": args.epochs or 3,
    }
    settings = load_settings(args.config, {**overrides, **tiny})
    result = train(settings, promote=True)
    assert result.version is not None
    return settings, result.version


def _ensure_reference(settings: Settings, registry: Registry, version: int) -> None:
    """``novel`` compares with the version's reference of the serving backend: embed it
    (into the copy) when the source home has none for this backend."""
    run_id = str(registry.get_version(version).run_id)
    where = artifact_path(settings.serve.backend)
    if not any(f.path == f"{where}/meta.json" for f in registry.client.list_artifacts(run_id, where)):
        embed_reference(settings, registry, version=version, backend=settings.serve.backend)


def _serve_traffic(settings: Settings, store: InferenceStore, model: Any, version: int, pool: int) -> dict[str, int]:
    """Log ``pool`` tweets as the server does (predictions and embeddings of the serving
    backend); returns each prediction's true label by id."""
    traffic = load_corpus("tweets").train.sample(pool, seed=TRAFFIC_SEED)
    pred = embed_as_served(model, traffic.texts, settings.serve.backend, max_tokens=settings.serve.batch_max_tokens)
    assert pred.embeddings is not None
    records = [
        PredictionRecord(
            model_name=settings.mlflow.model_name,
            model_version=version,
            alias=settings.serve.alias,
            text=text,
            prediction=int(pred.labels[i]),
            probability=float(pred.probabilities[i, 1]),
            confidence=float(pred.confidences[i]),
            embedding=pred.embeddings[i],
            backend=settings.serve.backend,
        )
        for i, text in enumerate(traffic.texts)
    ]
    store.add_predictions(records)
    return {r.id: int(label) for r, label in zip(records, traffic.labels, strict=True)}


def _one_run(
    settings: Settings,
    store: InferenceStore,
    truth: dict[str, int],
    run: tuple[Strategy, int, int],
    ctx: dict[str, Any],
) -> dict[str, Any]:
    """Choose, label, retrain, score, unlabel: one point of a curve."""
    strategy, size, seed = run
    selection = Selection(strategy, size, seed=seed, window=ctx["pool"], version=ctx["version"])
    queue = choose_to_label(settings, ctx["registry"], store, selection)
    chosen = [item.record for item in queue.items]
    statuses = store.set_feedback_many([(r.id, truth[r.id]) for r in chosen])
    assert statuses.count("applied") == len(chosen)
    try:
        t0 = time.perf_counter()
        result = retrain(settings, registry=ctx["registry"], store=store)
        seconds = time.perf_counter() - t0
        model = ctx["registry"].load_model(result.version)
        after = _scores(model, ctx["tweets_eval"], ctx["golden"], settings.train.eval_batch_size)
    finally:
        for r in chosen:  # every run starts from the same unlabeled store
            store.clear_feedback(r.id)
    return {
        "strategy": str(strategy),
        "labels": size,
        "seed": seed,
        **_entry(ctx["before"], after, result, seconds),
        "chosen": len(chosen),
        "chosen_positive_share": round(sum(truth[r.id] for r in chosen) / max(1, len(chosen)), 4),
        "model_agreement": round(sum(r.prediction == truth[r.id] for r in chosen) / max(1, len(chosen)), 4),
    }


def _curves(runs: list[dict[str, Any]], strategies: list[str], sizes: list[int]) -> dict[str, Any]:
    curves: dict[str, Any] = {}
    for strategy in strategies:
        points = []
        for size in sizes:
            mine = [r for r in runs if r["strategy"] == strategy and r["labels"] == size]
            if not mine:
                continue
            gains = [r["tweets_f1_gain"] for r in mine]
            drops = [r["imdb_acc_drop"] for r in mine]
            gain, drop = statistics.fmean(gains), statistics.fmean(drops)
            points.append(
                {
                    "labels": size,
                    "seeds": len(mine),
                    "tweets_f1_gain_mean": round(gain, 4),
                    "tweets_f1_gain_sd": round(statistics.stdev(gains), 4) if len(gains) > 1 else None,
                    "imdb_acc_drop_mean": round(drop, 4),
                    "tweets_f1_after_mean": round(statistics.fmean(r["tweets_f1_after"] for r in mine), 4),
                    "target_met": gain >= TARGET["tweets_f1_gain_min"] and drop <= TARGET["imdb_acc_drop_max"],
                }
            )
        curves[str(strategy)] = points
    return curves


def _labels_to_target(curves: dict[str, Any]) -> dict[str, int | None]:
    return {s: next((p["labels"] for p in points if p["target_met"]), None) for s, points in curves.items()}


def _summary(args: argparse.Namespace, runs: list[dict[str, Any]], fixed: dict[str, Any]) -> dict[str, Any]:
    # every size and strategy run so far under this key, not only this invocation's: a run
    # resumed with other --sizes/--strategies keeps the earlier curves
    strategies = list(dict.fromkeys([*map(str, args.strategies), *(r["strategy"] for r in runs)]))
    sizes = sorted({*args.sizes, *(r["labels"] for r in runs)})
    curves = _curves(runs, strategies, sizes)
    to_target = _labels_to_target(curves)
    mixed, rand = to_target.get("mixed"), to_target.get("random")
    met = None if mixed is None and rand is None else mixed is not None and (rand is None or 2 * mixed <= rand)
    return {
        "labels_to_target": to_target,
        "target": {**TARGET, "mixed_at_most_half_of_random": True},
        "target_met": met,
        "curves": curves,
        "runs": runs,
        **fixed,
    }


def markdown(entry: dict[str, Any]) -> str:
    """The curves of one key as a markdown table: per strategy and number of labels, the mean
    tweets F1 gain, each seed's gain, and the mean golden accuracy drop in points."""
    strategies = [str(s) for s in Strategy if str(s) in entry["curves"]]
    sizes = sorted({p["labels"] for points in entry["curves"].values() for p in points})
    lines = ["| labels | " + " | ".join(strategies) + " |", "|---|" + "---|" * len(strategies)]
    for size in sizes:
        cells = []
        for strategy in strategies:
            runs = sorted(
                (r for r in entry["runs"] if r["strategy"] == strategy and r["labels"] == size), key=lambda r: r["seed"]
            )
            if not runs:
                cells.append("–")
                continue
            gain = statistics.fmean(r["tweets_f1_gain"] for r in runs)
            drop = statistics.fmean(r["imdb_acc_drop"] for r in runs)
            seeds = ", ".join(f"{r['tweets_f1_gain']:+.3f}" for r in runs)
            met = gain >= TARGET["tweets_f1_gain_min"] and drop <= TARGET["imdb_acc_drop_max"]
            mean = f"**{gain:+.3f}**" if met else f"{gain:+.3f}"
            cells.append(f"{mean} ({seeds}) · {round(100 * drop, 1) + 0.0:+.1f} pts")  # + 0.0: no "-0.0"
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    to_target = ", ".join(f"{k} {v}" for k, v in entry["labels_to_target"].items())
    lines += ["", f"labels_to_target: {to_target}; target met: {entry['target_met']}"]
    return "\n".join(lines)


def _write(out: Path, key: str, entry: dict[str, Any], load_before: list[float]) -> None:
    entry = write_result(out, entry, load_before, section=key)
    if key == "cpu":  # the contract: labels_to_target and the curves at the top level
        data = json.loads(out.read_text())
        data["labels_to_target"], data["curves"] = entry["labels_to_target"], entry["curves"]
        out.write_text(json.dumps(data, indent=2) + "\n")


def main() -> None:
    args = _args()
    if args.render:
        print(markdown(json.loads(args.out.read_text())[args.key]))
        return
    load_before = load_average()
    quiet_third_party()
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    settings, version = _home(args)
    registry = Registry(settings)
    registry.promote(version)  # serve.alias
    _ensure_reference(settings, registry, version)
    store = InferenceStore(settings.store_url)
    model = registry.load_model(version)
    ctx: dict[str, Any] = {
        "registry": registry,
        "version": version,
        "pool": args.pool,
        "replay_ratio": args.replay_ratio,
        "tweets_eval": load_corpus("tweets").test.head(args.tweets_eval),
        "golden": golden_test(args.golden),
    }
    ctx["before"] = _scores(model, ctx["tweets_eval"], ctx["golden"], settings.train.eval_batch_size)
    truth = _serve_traffic(settings, store, model, version, args.pool)
    print(f"before: {ctx['before']}  ({time.perf_counter() - start:.0f} s)", flush=True)

    fixed: dict[str, Any] = {
        "config": {
            "source": "tiny model (--quick)" if args.quick else args.source_home,
            "start_version": version,
            "start_version_golden_accuracy": registry.get_version(version).golden_accuracy,
            "pool": args.pool,
            "backend": args.backend,
            "tweets_eval_size": args.tweets_eval,
            "golden_size": args.golden,
            "epochs": settings.retrain.epochs,
            "learning_rate": settings.retrain.learning_rate,
            "replay_ratio": settings.retrain.replay_ratio if args.replay_ratio is None else args.replay_ratio,
            "holdout_fraction": settings.retrain.holdout_fraction,
            "max_length": model.max_length,
        },
        "before": {k: round(v, 4) for k, v in ctx["before"].items()},
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    fingerprint = hashlib.sha256(json.dumps(fixed["config"], sort_keys=True, default=str).encode()).hexdigest()[:12]
    old = json.loads(args.out.read_text()).get(args.key, {}) if args.out.exists() else {}
    runs = old.get("runs", []) if old.get("fingerprint") == fingerprint else []
    done = {(r["strategy"], r["labels"], r["seed"]) for r in runs}
    for seed in args.seeds:
        for size in args.sizes:
            for strategy in args.strategies:
                if (str(strategy), size, seed) in done:
                    continue
                entry = _one_run(settings, store, truth, (strategy, size, seed), ctx)
                runs.append(entry)
                keys = ("strategy", "labels", "seed", "tweets_f1_gain", "imdb_acc_drop", "retrain_seconds")
                print(json.dumps({k: entry[k] for k in keys}), flush=True)
                fixed.update(fingerprint=fingerprint, total_seconds=round(time.perf_counter() - start, 1))
                _write(args.out, args.key, _summary(args, runs, fixed), load_before)
    store.close()
    summary = _summary(args, runs, fixed)
    _write(args.out, args.key, summary, load_before)
    print(json.dumps({k: summary[k] for k in ("labels_to_target", "target_met", "curves")}, indent=2))


if __name__ == "__main__":
    main()
