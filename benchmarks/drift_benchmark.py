"""Drift benchmark: the product's calibrated drift test against the seed's fixed cosine rule.

    flock /tmp/sentops-bench.lock python benchmarks/drift_benchmark.py     # default entry
    ... --reference-backend torch --variant onnx_windows_fp32_reference      # the mismatch
    ... --backend torch --variant torch_serving                              # fp32 serving

The model: the one ``sentops train`` logged with the default config (found under
``--artifacts``; read only). Reference: the 1,000 held-out IMDB validation reviews that
``sentops train`` embeds (``reference.build_reference``). Windows of 100 and 500 texts drawn
at random (seeded) from pools that share no text with the reference or the training data:

* ``imdb`` (no shift): the 5,000 golden IMDB test reviews,
* ``imdb_90_negative``: the same pool, 90% negative reviews (label shift),
* ``imdb_5_tweets`` / ``imdb_10_tweets`` / ``imdb_50_tweets``: IMDB mixed with tweets,
* ``rotten_tomatoes``: RT test snippets, ``tweets``: tweets test split.

The pools hold the corpus loader's cleaned texts (what training and the reference see).
The same windows are drawn a second time from the texts as the corpus files ship them
(``data.as_shipped``: IMDB with its ``<br />`` markup), which is what clients whose data
was collected like the corpus send to the server: reported under ``raw_text``. The model
normalises both with the normaliser it owns (``textnorm``); ``--text-normalizer identity``
replays the serving path from before (raw text straight into the model).

Every text is embedded once, exactly as the server logs it (``reference.embed_as_served``
with ``serve.backend``: the ONNX int8 export and the server's forward-pass grouping by
default; one pass gives label and mean-pooled embedding) and cached under ``--cache``. Each
window is then checked by ``drift.detect`` (what ``sentops drift`` runs: cosine score, the
permutation test of ``drift.method`` at the default alpha, label mix, farthest texts), by the
plain MMD² permutation test on raw embeddings, and by the seed rule (cosine distance of
centroids > 0.30). One full ``run_drift_check`` (MLflow reference download + store read +
check + records) is timed on a scratch home as well.

Writes benchmarks/results/drift.json (``--variant NAME``: under ``variants``) and prints a
summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import drift_calibration as dc
import numpy as np
import torch

from sentiment_ops import textnorm
from sentiment_ops.cli.common import quiet_third_party
from sentiment_ops.config import Settings, load_settings
from sentiment_ops.data import Split, load_corpus
from sentiment_ops.drift import DetectOptions, cosine_centroid_distance, detect, monitor, permutation_test
from sentiment_ops.drift.calibrated import CalibratedTest
from sentiment_ops.drift.check import CHECK_SEED
from sentiment_ops.drift.reference import CALIBRATION_SAMPLES, REFERENCE_SEED, calibration_texts, embed_as_served
from sentiment_ops.modeling import SentimentModel

RESULTS = Path(__file__).parent / "results" / "drift.json"
SHIFTED = ("imdb_90_negative", "imdb_5_tweets", "imdb_10_tweets", "imdb_50_tweets", "rotten_tomatoes", "tweets")


# -- model and embeddings ---------------------------------------------------------------
def find_model_dir(artifacts: Path) -> Path:
    """The ``hf_model`` folder logged by ``sentops train`` under an MLflow artifact root."""
    found = sorted(p.parent for p in artifacts.rglob("hf_model/sentops.json"))
    if len(found) != 1:
        raise SystemExit(f"expected one hf_model under {artifacts}, found {len(found)}: pass --model-dir")
    return found[0]


def training_params(db: Path, run_id: str | None) -> dict[str, str]:
    """The logged training params of the run (read-only: the tracking DB is not ours)."""
    if not run_id or not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("select key, value from params where run_uuid = ?", (run_id,)).fetchall()
        metrics = con.execute(
            "select key, value from latest_metrics where run_uuid = ? and key like 'golden_%'", (run_id,)
        ).fetchall()
    finally:
        con.close()
    keep = ("base_model", "epochs", "learning_rate", "max_length", "head_tokens", "train_size", "seed", "train_hash")
    out = {k: v for k, v in rows if k in keep}
    out.update({k: f"{v:.4f}" for k, v in metrics if k in ("golden_accuracy", "golden_f1")})
    return out


def held_out(params: dict[str, str], imdb: Any, *text_sets: list[str]) -> bool:
    """True when the model's logged training sample is rebuilt exactly (same content hash)
    and shares no text with the reference or the pools."""
    try:
        train = imdb.train.sample(int(params["train_size"]), seed=int(params["seed"]))
    except (KeyError, ValueError):
        return False
    if train.hash != params.get("train_hash"):
        print("  warning: cannot rebuild the model's training sample (data or split changed)", flush=True)
        return False
    seen = set(train.texts)
    overlap = sum(len(seen & set(texts)) for texts in text_sets)
    assert overlap == 0, f"{overlap} reference/pool texts were in the model's training data"
    return True


def model_fingerprint(model_dir: Path) -> str:
    h = hashlib.sha256()
    for name in ("model.safetensors", "sentops.json", "config.json"):
        p = model_dir / name
        if p.exists():
            h.update(name.encode())
            h.update(str(p.stat().st_size).encode())
            with p.open("rb") as fh:
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:12]


class ServedEmbedder:
    """``reference.embed_as_served`` for one backend: torch fp32 (``SentimentModel.predict``,
    what the reference used to be) or the serving ONNX int8 export with the server's passes."""

    def __init__(self, model: SentimentModel, backend: str, settings: Settings, cache: Path) -> None:
        self.model, self.backend, self.settings, self.cache = model, backend, settings, cache / "onnx"

    def __call__(self, texts: list[str]) -> Any:
        return embed_as_served(
            self.model, texts, self.backend, self.cache, self.settings.serve.batch_max_tokens, os.cpu_count()
        )


def embed_cached(embed: ServedEmbedder, texts: list[str], labels: np.ndarray, cache: Path, name: str) -> dict[str, Any]:
    """Embeddings + predicted labels of ``texts``, computed once and cached by content."""
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    suffix = "" if embed.backend == "torch" else f"-{embed.backend}"
    spec = embed.model.normalizer.spec
    if spec != textnorm.LEGACY:  # (legacy: the cache names of runs before normalisers)
        suffix += f"-{spec.name}.v{spec.version}"
    path = cache / f"{name}{suffix}-{len(texts)}-{key}.npz"
    if path.exists():
        with np.load(path) as npz:
            return {"emb": npz["emb"], "pred": npz["pred"], "labels": npz["labels"], "texts": texts, "seconds": 0.0}
    start = time.perf_counter()
    pred = embed(texts)
    seconds = time.perf_counter() - start
    assert pred.embeddings is not None
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, emb=pred.embeddings, pred=pred.labels, labels=labels)
    print(
        f"  embedded {name} ({embed.backend}): {len(texts)} texts in {seconds:.0f} s ({len(texts) / seconds:.1f}/s)",
        flush=True,
    )
    return {"emb": pred.embeddings, "pred": pred.labels, "labels": labels, "texts": texts, "seconds": seconds}


# -- windows ------------------------------------------------------------------------------
def draw(pool: dict[str, Any], idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    return pool["emb"][idx], pool["pred"][idx], [pool["texts"][i] for i in idx]


def window(scenario: str, size: int, rng: np.random.Generator, pools: dict[str, dict[str, Any]]):  # type: ignore[no-untyped-def]
    imdb, tweets, rt = pools["imdb"], pools["tweets"], pools["rotten_tomatoes"]

    def mix(n_tweets: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        a = draw(imdb, rng.choice(len(imdb["emb"]), size - n_tweets, replace=False))
        b = draw(tweets, rng.choice(len(tweets["emb"]), n_tweets, replace=False))
        return np.vstack([a[0], b[0]]), np.concatenate([a[1], b[1]]), a[2] + b[2]

    if scenario == "imdb":
        return draw(imdb, rng.choice(len(imdb["emb"]), size, replace=False))
    if scenario == "imdb_90_negative":
        neg = np.flatnonzero(imdb["labels"] == 0)
        pos = np.flatnonzero(imdb["labels"] == 1)
        n_neg = round(size * 0.9)
        idx = np.concatenate([rng.choice(neg, n_neg, replace=False), rng.choice(pos, size - n_neg, replace=False)])
        return draw(imdb, idx)
    if scenario.startswith("imdb_") and scenario.endswith("_tweets"):
        share = int(scenario.split("_")[1]) / 100
        return mix(round(size * share))
    if scenario == "rotten_tomatoes":
        return draw(rt, rng.choice(len(rt["emb"]), size, replace=False))
    if scenario == "tweets":
        return draw(tweets, rng.choice(len(tweets["emb"]), size, replace=False))
    raise ValueError(scenario)


def run_size(
    size: int,
    pools: dict[str, dict[str, Any]],
    ref: dict[str, Any],
    settings: Settings,
    null_windows: int,
    shifted_windows: int,
    label: str = "",
) -> dict[str, Any]:
    cfg = settings.drift
    rng = np.random.default_rng(1000 + size)
    per: dict[str, dict[str, list[float]]] = {}
    check_seconds: list[float] = []
    seed_seconds: list[float] = []
    raw_seconds: list[float] = []
    for scenario in ("imdb", *SHIFTED):
        n = null_windows if scenario == "imdb" else shifted_windows
        rec: dict[str, list[float]] = {"test": [], "cos": [], "label": [], "p": [], "cosine": [], "raw": []}
        for _ in range(n):
            emb, pred, texts = window(scenario, size, rng, pools)
            report = detect(
                ref["emb"],
                emb,
                ref_labels=ref["pred"],
                win_labels=pred,
                texts=texts,
                options=DetectOptions.of(cfg, seed=CHECK_SEED),
            )
            check_seconds.append(report.seconds)
            # the plain MMD² test on raw embeddings (whitening off, no nearest statistic)
            t0 = time.perf_counter()
            raw = permutation_test(ref["emb"], emb, cfg.permutations, CHECK_SEED, whiten=0, nearest=False)
            raw_seconds.append(time.perf_counter() - t0)
            rec["raw"].append(float(raw.p_value < cfg.alpha))
            t0 = time.perf_counter()
            cos = cosine_centroid_distance(ref["emb"], emb)
            seed_seconds.append(time.perf_counter() - t0)
            rec["test"].append(float(report.test_drift))
            rec["cos"].append(float(cos > cfg.cosine_threshold))
            rec["label"].append(float(report.label_drift))
            rec["p"].append(report.p_value)
            rec["cosine"].append(cos)
        per[scenario] = rec
        print(
            f"  {label}window {size:>3} {scenario:<17} n={n:<3} sentops {np.mean(rec['test']):.2f}  "
            f"raw MMD² {np.mean(rec['raw']):.2f}  "
            f"seed {np.mean(rec['cos']):.2f}  label {np.mean(rec['label']):.2f}  "
            f"median p {np.median(rec['p']):.4f}  mean cosine {np.mean(rec['cosine']):.4f}",
            flush=True,
        )

    def rates(key: str) -> dict[str, float]:
        return {s: round(float(np.mean(per[s][key])), 4) for s in SHIFTED}

    return {
        "sentops": {
            "false_alarm_rate": round(float(np.mean(per["imdb"]["test"])), 4),
            "detection_rate": rates("test"),
            "seconds_per_check": round(float(np.mean(check_seconds)), 4),
            "seconds_per_check_p95": round(float(np.percentile(check_seconds, 95)), 4),
            "rule": f"drift.method={cfg.method}: permutation test of MMD² (RBF, median heuristic) and mean "
            f"squared nearest-reference distance on embeddings whitened to {cfg.whiten_components} "
            f"components, min-p aggregate < {cfg.alpha} ({cfg.permutations} permutations); the full "
            "check (cosine, label mix, farthest texts included)",
        },
        "mmd_raw": {
            "false_alarm_rate": round(float(np.mean(per["imdb"]["raw"])), 4),
            "detection_rate": rates("raw"),
            "seconds_per_check": round(float(np.mean(raw_seconds)), 4),
            "rule": f"MMD² RBF permutation test on raw embeddings (median heuristic), p < {cfg.alpha}",
        },
        "seed_rule": {
            "false_alarm_rate": round(float(np.mean(per["imdb"]["cos"])), 4),
            "detection_rate": rates("cos"),
            "seconds_per_check": round(float(np.mean(seed_seconds)), 6),
            "rule": f"cosine distance of mean embeddings > {cfg.cosine_threshold}",
        },
        "label_mix": {
            "false_alarm_rate": round(float(np.mean(per["imdb"]["label"])), 4),
            "detection_rate": rates("label"),
            "rule": f"two-proportion z-test on the predicted positive share, p < {cfg.alpha}",
        },
        "null_p_value_quantiles": {
            str(q): round(float(np.quantile(per["imdb"]["p"], q)), 4) for q in (0.01, 0.05, 0.1, 0.5)
        },
        "null_rejections_at_0.05": round(float(np.mean(np.array(per["imdb"]["p"]) < 0.05)), 4),
        "mean_cosine_distance": {s: round(float(np.mean(r["cosine"])), 4) for s, r in per.items()},
        "median_p_value": {s: round(float(np.median(r["p"])), 4) for s, r in per.items()},
        "windows": {s: len(r["test"]) for s, r in per.items()},
    }


# -- one full check through MLflow and the store ------------------------------------------
def end_to_end_seconds(
    ref: dict[str, Any], pools: dict[str, dict[str, Any]], size: int, backend: str, cal: dict[str, Any] | None = None
) -> dict[str, float]:
    """Time ``run_drift_check`` on a scratch home: registered version whose run carries the
    reference artifact, ``size`` served rows in the SQLite store."""
    from sentiment_ops.drift.check import run_drift_check
    from sentiment_ops.drift.reference import Reference, ReferenceMeta, log_reference
    from sentiment_ops.store import InferenceStore, PredictionRecord
    from sentiment_ops.tracking.registry import Registry

    with tempfile.TemporaryDirectory(prefix="sentops-drift-bench-") as home:
        settings = load_settings(overrides={"home": home, "serve.backend": backend, "drift.window": size})
        registry = Registry(settings)
        client = registry.client
        run = client.create_run(registry.experiment_id(), run_name="drift-bench")
        meta = ReferenceMeta(
            "imdb",
            "validation",
            "bench",
            len(ref["emb"]),
            "mean",
            int(ref["emb"].shape[1]),
            {},
            datetime.now(UTC).isoformat(),
            backend=backend,
        )
        calibration = (cal["emb"], cal["pred"]) if cal is not None else (None, None)
        log_reference(registry, run.info.run_id, Reference(ref["emb"], ref["pred"], meta, *calibration))
        client.create_registered_model(settings.mlflow.model_name)
        mv = client.create_model_version(
            settings.mlflow.model_name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
        client.set_registered_model_alias(settings.mlflow.model_name, "production", mv.version)
        imdb = pools["imdb"]
        store = InferenceStore(settings.store_url)
        store.add_predictions(
            [
                PredictionRecord(
                    settings.mlflow.model_name,
                    int(mv.version),
                    imdb["texts"][i],
                    int(imdb["pred"][i]),
                    0.5,
                    0.5,
                    embedding=imdb["emb"][i],
                    backend=backend,  # the embedding space: drift compares only rows of the reference's
                )
                for i in range(size)
            ]
        )
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            run_drift_check(settings, registry, alias="production", store=store)
            times.append(time.perf_counter() - t0)
        store.close()
    return {"window": size, "seconds_median_of_3": round(float(np.median(times)), 3)}


def window_pool(imdb: Any, params: dict[str, str], taken: set[str], train_texts: int) -> Split:
    """IMDB texts that neither the model (its logged training sample, rebuilt), the reference
    nor the calibration set used: the rest of the test split, then ``train_texts`` of the
    training split's unused rows (seeded order)."""
    trained: set[str] = set()
    if "train_size" in params:
        trained = set(imdb.train.sample(int(params["train_size"]), seed=int(params["seed"])).texts)
    test = [i for i, t in enumerate(imdb.test.texts) if t not in taken]
    order = np.random.default_rng(REFERENCE_SEED).permutation(len(imdb.train))
    train = [int(i) for i in order if imdb.train.texts[i] not in trained and imdb.train.texts[i] not in taken]
    train = train[:train_texts]
    texts = [imdb.test.texts[i] for i in test] + [imdb.train.texts[i] for i in train]
    labels = np.concatenate([imdb.test.labels[test], imdb.train.labels[train]])
    return Split(texts, labels)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default="auto", help="hf_model folder, or 'auto' to find it under --artifacts")
    ap.add_argument("--artifacts", default="/tmp/bench-acc/mlartifacts", type=Path)
    ap.add_argument("--tracking-db", default="/tmp/bench-acc/mlflow.db", type=Path)
    ap.add_argument("--cache", default="/tmp/sentops-drift-cache", type=Path)
    ap.add_argument("--train-pool", type=int, default=3000, help="unused training-split texts added to the window pool")
    ap.add_argument("--tweet-pool", type=int, default=1000)
    ap.add_argument("--rt-pool", type=int, default=1000)
    ap.add_argument("--reference", type=int, default=1000)
    ap.add_argument("--calibration", type=int, default=CALIBRATION_SAMPLES)
    ap.add_argument("--null-windows", type=int, default=100)
    ap.add_argument("--shifted-windows", type=int, default=20)
    ap.add_argument("--calibrated-windows", type=int, default=1000)
    ap.add_argument("--calibrated-shifted", type=int, default=100)
    ap.add_argument("--reference-draws", type=int, default=3)
    ap.add_argument("--draw-windows", type=int, default=300)
    ap.add_argument("--stream-checks", type=int, default=20000)
    ap.add_argument("--onsets", type=int, default=100)
    ap.add_argument("--root-cause-draws", type=int, default=8)
    ap.add_argument("--root-cause-windows", type=int, default=40)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--backend", choices=("onnx", "torch"), default=None, help="default: serve.backend")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    quiet_third_party()
    load_start = [round(x, 2) for x in os.getloadavg()]
    settings = load_settings(overrides={"home": tempfile.gettempdir()})  # drift defaults only
    cfg = settings.drift
    model_dir = find_model_dir(args.artifacts) if args.model_dir == "auto" else Path(args.model_dir)
    meta = json.loads((model_dir / "sentops.json").read_text())
    model = SentimentModel.from_dir(model_dir)
    cache = args.cache / model_fingerprint(model_dir)
    print(f"model {model_dir}; cache {cache}", flush=True)
    params = training_params(args.tracking_db, meta.get("run_id"))

    imdb = load_corpus("imdb")
    ref_split = imdb.validation.sample(args.reference, seed=REFERENCE_SEED)  # as build_reference does
    cal_texts = calibration_texts(imdb, ref_split.texts, args.calibration)
    label_of = dict(
        zip(
            imdb.validation.texts + imdb.test.texts,
            np.concatenate([imdb.validation.labels, imdb.test.labels]),
            strict=True,
        )
    )
    cal_split = Split(cal_texts, np.array([label_of[t] for t in cal_texts]))
    pool = window_pool(imdb, params, set(ref_split.texts) | set(cal_texts), args.train_pool)
    tw = load_corpus("tweets").test.head(args.tweet_pool)
    rt = load_corpus("rotten_tomatoes").test.head(args.rt_pool)
    taken = set(ref_split.texts) | set(cal_texts)
    assert not taken & (set(pool.texts) | set(tw.texts) | set(rt.texts)), "a pool overlaps the reference"
    backend = args.backend or settings.serve.backend
    served = ServedEmbedder(model, backend, settings, cache)
    ref = embed_cached(served, ref_split.texts, ref_split.labels, cache, "reference")
    cal = embed_cached(served, cal_split.texts, cal_split.labels, cache, "calibration")
    pools = {
        "imdb": embed_cached(served, pool.texts, pool.labels, cache, "imdb_pool"),
        "tweets": embed_cached(served, tw.texts, tw.labels, cache, "tweets_test"),
        "rotten_tomatoes": embed_cached(served, rt.texts, rt.labels, cache, "rt_test"),
    }
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    result: dict[str, Any] = {}
    for size in (100, 500):
        result[str(size)] = run_size(size, pools, ref, settings, args.null_windows, args.shifted_windows)
    result["calibrated"] = calibrated_section(args, cfg, ref, cal, pools)
    result["repeated"] = repeated_section(args, cfg, ref, cal, pools)
    result["root_cause"] = root_cause_section(args, cfg, ref, cal, pools)
    result["end_to_end"] = end_to_end_seconds(ref, pools, 500, backend, cal)
    result["setup"] = {
        "reference": f"{len(ref_split)} IMDB validation reviews (seed {REFERENCE_SEED}), as sentops train logs it",
        "calibration": f"{len(cal_texts)} held-out IMDB texts (reference.calibration_texts: the rest of the "
        "validation split, then the test split), as sentops train logs them",
        "pools": {
            "imdb": f"{len(pool)} IMDB texts in neither the model's training sample, the reference nor the "
            f"calibration set: the rest of the test split, then {args.train_pool} unused training-split texts",
            "tweets": f"first {len(tw)} of the tweets test split",
            "rotten_tomatoes": f"first {len(rt)} of the Rotten Tomatoes test split",
        },
        "embedding": "mean-pooled last hidden state of one forward pass, as the server logs it",
        "backend": backend,
        "load_average_start": load_start,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        **{k: getattr(cfg, k) for k in ("alpha", "method", "whiten_components", "permutations", "cosine_threshold")},
    }
    result["model"] = {
        "dir": str(model_dir),
        "run_id": meta.get("run_id"),
        **params,
        "held_out_verified": held_out(params, imdb, ref_split.texts, cal_texts, pool.texts),
    }
    result["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)"
    result["torch"] = torch.__version__
    result["date"] = datetime.now(UTC).date().isoformat()
    result["command"] = " ".join(["flock /tmp/sentops-bench.lock python benchmarks/drift_benchmark.py", *sys.argv[1:]])
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    kept = {k: previous[k] for k in ("raw_text", "variants") if k in previous}
    if kept:
        result["note"] = "raw_text and variants are kept from the previous run (another model): not re-run here"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**result, **kept}, indent=2) + "\n")
    print_summary(result)
    print(f"wrote {args.out}")


def calibrated_section(args: Any, cfg: Any, ref: Any, cal: Any, pools: Any) -> dict[str, Any]:
    test = CalibratedTest.fit(ref["emb"], cal["emb"], cal["pred"], cfg.whiten_components)
    pools = dc.with_scores(test, pools)
    out: dict[str, Any] = {
        "rule": "drift.method=calibrated: T = squared distance of the window's mean from the calibration "
        "set's mean in the reference's whitened space, against the scaled chi-square of its null mean and "
        "variance (estimated on the calibration set)"
    }
    for size in (100, 500, 2000):
        out[str(size)] = dc.calibrated_size(test, pools, size, args.calibrated_windows, args.calibrated_shifted, size)
        print(f"  calibrated window {size}: {out[str(size)]}", flush=True)
    held = {k: np.concatenate([ref[k], cal[k], pools["imdb"][k]]) for k in ("emb", "pred", "labels")}
    draws = dc.other_references(
        held, pools, len(ref["emb"]), len(cal["emb"]), args.reference_draws, args.draw_windows, cfg.whiten_components
    )
    out["500"]["references"] = [
        {
            "draw": "deployed",
            **{k: out["500"][k] for k in ("windows", "false_alarm_rate_0.01", "false_alarm_rate_0.05")},
        },
        *draws,
    ]
    for size in ("100", "2000"):
        out[size]["references"] = [{"draw": "deployed"}]
    print(f"  other reference draws: {draws}", flush=True)
    out["calibration_size_effect"] = dc.calibration_size_effect(
        held, len(ref["emb"]), (1000, 4000, 12000), 8, 300, cfg.whiten_components
    )
    print(f"  calibration size effect: {out['calibration_size_effect']}", flush=True)
    return out


def repeated_section(args: Any, cfg: Any, ref: Any, cal: Any, pools: Any) -> dict[str, Any]:
    test = CalibratedTest.fit(ref["emb"], cal["emb"], cal["pred"], cfg.whiten_components)
    pools = dc.with_scores(test, pools)
    margin = test.offset_margin(500)
    h = monitor.cusum_threshold(720.0, monitor.CUSUM_K - margin)
    null = dc.stream_false_alarms(test, pools, args.stream_checks, 500, h)
    delays = dc.detection_delays(test, ref["emb"], pools, args.onsets, 500, h, 12)
    print(f"  repeated: {null['expected_checks_between_false_alarms']} checks between false alarms", flush=True)
    return {
        "rule": f"CUSUM of u = Φ⁻¹(1 - p) of consecutive windows of 500, k = {monitor.CUSUM_K}, h = {h:.3f} "
        f"(false_alarm_every 30d, check_every 1h: 720 checks with every u offset by the calibration margin "
        f"{margin:.3f}); seed_cosine: centroid cosine distance > 0.30 "
        "at a check; plain_mmd: raw-embedding MMD² permutation test p < 0.01 at a check",
        "expected_checks_between_false_alarms": null["expected_checks_between_false_alarms"],
        "stream": {k: v for k, v in null.items() if k != "run_lengths"},
        "median_delay_checks": {s: d["repeated"]["median_delay_checks"] for s, d in delays.items()},
        "delays": delays,
    }


def root_cause_section(args: Any, cfg: Any, ref: Any, cal: Any, pools: Any) -> dict[str, Any]:
    held = {k: np.concatenate([ref[k], cal[k], pools["imdb"][k]]) for k in ("emb", "pred", "labels")}
    out = {}
    for whiten in (cfg.whiten_components, 0):
        out[f"whiten_{whiten}"] = dc.permutation_root_cause(
            held, len(ref["emb"]), args.root_cause_draws, args.root_cause_windows, whiten, 200
        )
        print(f"  root cause (whiten {whiten}): {out[f'whiten_{whiten}']}", flush=True)
    return out


def print_summary(result: dict[str, Any]) -> None:
    for size in ("100", "500", "2000"):
        c = result["calibrated"][size]
        print(
            f"calibrated window {size}: FA@0.01 {c['false_alarm_rate_0.01']} {c['binomial_95_interval_0.01']}, "
            f"FA@0.05 {c['false_alarm_rate_0.05']} {c['binomial_95_interval_0.05']}; {c['detection_rate_0.01']}"
        )
    print(
        f"repeated: {result['repeated']['expected_checks_between_false_alarms']} checks between false alarms; "
        f"median delays {result['repeated']['median_delay_checks']}"
    )


if __name__ == "__main__":
    main()
