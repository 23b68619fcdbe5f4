"""Accuracy benchmark: the default CPU config (or another YAML) trained end to end.

    python benchmarks/accuracy.py                       # default config → "cpu" entry
    python benchmarks/accuracy.py --config configs/full.yaml --key gpu
    python benchmarks/accuracy.py --data tweets3 --key tweets3   # 3 classes vs TF-IDF + LR

Writes the section ``--key`` of benchmarks/results/accuracy.json and prints the entry. Training
time is the Trainer's wall time; evaluation runs on the full 5,000-review golden split.

With ``--data`` other than imdb the entry holds the test split's ``macro_f1`` and ``accuracy``
and the same figures of a TF-IDF + logistic regression baseline fitted on the corpus's whole
training split (``baseline_macro_f1``, ``baseline_accuracy``; word 1-2 grams and character
2-5 grams, class weights balanced, C chosen on the validation split).
"""

from __future__ import annotations

import json
import tempfile
import time
from typing import Any

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
    ap.add_argument("--data", default=None, help="train.data (default: the config's)")
    args = ap.parse_args()
    quiet_third_party()
    home = args.home or tempfile.mkdtemp(prefix="sentops-bench-")
    overrides = {"home": home, "train.eval_samples": None, **({"train.data": args.data} if args.data else {})}
    settings = load_settings(args.config, overrides)
    if settings.train.data != "imdb":
        return corpus_entry(settings, args)
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


def baseline(data: str) -> dict[str, float]:
    """TF-IDF + logistic regression on the whole training split, C picked on validation."""
    import numpy as np
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from sentiment_ops.data import load_corpus

    corpus = load_corpus(data)
    word = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)
    x_train = hstack([word.fit_transform(corpus.train.texts), char.fit_transform(corpus.train.texts)]).tocsr()

    def features(texts: list[str]):  # type: ignore[no-untyped-def]
        return hstack([word.transform(texts), char.transform(texts)]).tocsr()

    x_val, x_test = features(corpus.validation.texts), features(corpus.test.texts)
    best = None
    for c in (0.5, 1.0, 2.0, 4.0, 8.0):
        clf = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(x_train, corpus.train.labels)
        score = f1_score(corpus.validation.labels, clf.predict(x_val), average="macro")
        if best is None or score > best[0]:
            best = (score, c, clf)
    assert best is not None
    pred = best[2].predict(x_test)
    return {
        "baseline_macro_f1": round(float(f1_score(corpus.test.labels, pred, average="macro")), 4),
        "baseline_accuracy": round(float(accuracy_score(corpus.test.labels, pred)), 4),
        "baseline_c": best[1],
        "baseline_train_rows": len(corpus.train),
        "test_rows": int(np.asarray(corpus.test.labels).size),
    }


def corpus_entry(settings: Any, args: Any) -> None:
    """Train on ``train.data`` and compare with the TF-IDF baseline on its test split."""
    load_before = load_average()
    start = time.perf_counter()
    result = train(settings)
    total = time.perf_counter() - start
    m = result.metrics
    entry = {
        "data": settings.train.data,
        "labels": result.data.get("labels"),
        "macro_f1": round(m["test_macro_f1"], 4),
        "accuracy": round(m["test_accuracy"], 4),
        **{k[len("test_") :]: round(v, 4) for k, v in m.items() if k.startswith("test_f1_")},
        "train_seconds": round(result.train_seconds, 1),
        "total_seconds": round(total, 1),
        "train_max_samples": settings.train.max_samples,
        **baseline(settings.train.data),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    entry["margin_points"] = round(100 * (entry["macro_f1"] - entry["baseline_macro_f1"]), 1)
    entry = write_result(args.out, entry, load_before, section=args.key, env_prefixes=("SENTOPS_TRAIN__",))
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
