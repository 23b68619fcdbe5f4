"""Classification metrics and the plots logged with every training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from sentiment_ops.labels import BINARY, LabelSet


def _probs(probabilities: np.ndarray) -> np.ndarray:
    """(n, k) class probabilities; a 1-d array is P(positive) of a binary model."""
    p = np.asarray(probabilities, dtype=np.float64)
    return np.column_stack([1.0 - p, p]) if p.ndim == 1 else p


def metric_name(name: str) -> str:
    """A class name as MLflow metric names allow it (letters, digits, ``_-.``)."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, classes: LabelSet = BINARY
) -> dict[str, float]:
    """Accuracy, precision / recall / F1 (of ``positive`` for a binary model, macro
    averages otherwise), ``macro_f1``, per class ``precision_<name>`` / ``recall_<name>`` /
    ``f1_<name>``, log loss and ROC AUC (one-vs-rest macro for k classes)."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.clip(_probs(probabilities), 1e-7, 1.0)
    probs = probs / probs.sum(axis=1, keepdims=True)
    preds = probs.argmax(axis=1)
    k = list(range(classes.k))
    p, r, f, _ = skm.precision_recall_fscore_support(labels, preds, labels=k, zero_division=0)
    out = {"accuracy": float(skm.accuracy_score(labels, preds))}
    if classes.k == 2:
        out.update(precision=float(p[1]), recall=float(r[1]), f1=float(f[1]))
    else:
        out.update(precision=float(p.mean()), recall=float(r.mean()), f1=float(f.mean()))
    out["macro_f1"] = float(f.mean())
    for i, name in enumerate(classes.names):
        key = metric_name(name)
        out.update({f"precision_{key}": float(p[i]), f"recall_{key}": float(r[i]), f"f1_{key}": float(f[i])})
    out["loss"] = float(skm.log_loss(labels, probs, labels=k))
    present = np.unique(labels)
    if classes.k == 2 and len(present) == 2:
        out["roc_auc"] = float(skm.roc_auc_score(labels, probs[:, 1]))
    elif classes.k > 2 and len(present) == classes.k:
        out["roc_auc"] = float(skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=k))
    return out


def binary_scores(probabilities: np.ndarray, classes: LabelSet) -> np.ndarray | None:
    """P(positive) among the two poles, P(positive) / (P(negative) + P(positive)), of a
    model whose classes include ``negative`` and ``positive``: how a k-class model is scored
    on a binary hold-out (the golden IMDB test). None when the classes lack either pole."""
    if not classes.has_poles():
        return None
    probs = _probs(probabilities)
    neg, pos = probs[:, classes.names.index("negative")], probs[:, classes.names.index("positive")]
    return np.asarray(pos / np.maximum(neg + pos, 1e-12))


def classification_report(labels: np.ndarray, probabilities: np.ndarray, classes: LabelSet = BINARY) -> str:
    preds = _probs(probabilities).argmax(axis=1)
    return str(
        skm.classification_report(
            labels, preds, labels=list(range(classes.k)), target_names=list(classes.names), digits=4, zero_division=0
        )
    )


def save_plots(
    labels: np.ndarray, probabilities: np.ndarray, out_dir: Path, title: str, classes: LabelSet = BINARY
) -> list[Path]:
    """Confusion matrix (k x k), ROC and precision-recall curves (one per class,
    one-vs-rest, for k > 2) as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    probs = _probs(probabilities)
    preds = probs.argmax(axis=1)
    paths = []

    size = (4.5, 4) if classes.k <= 3 else (1.2 * classes.k + 1, 1.1 * classes.k + 1)
    fig, ax = plt.subplots(figsize=size)
    skm.ConfusionMatrixDisplay.from_predictions(
        labels, preds, labels=list(range(classes.k)), display_labels=list(classes.names), ax=ax, colorbar=False
    )
    ax.set_title(f"Confusion matrix: {title}")
    paths.append(out_dir / "confusion_matrix.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    curves = (
        ("roc_curve.png", "ROC", skm.RocCurveDisplay),
        ("pr_curve.png", "Precision-recall", skm.PrecisionRecallDisplay),
    )
    shown = [i for i in range(classes.k) if 0 < np.count_nonzero(labels == i) < len(labels)]
    if classes.k == 2 and len(shown) == 2:
        shown = [1]  # one curve of the positive class, as binary plots read
    if shown:
        for file, name, display in curves:
            fig, ax = plt.subplots(figsize=(4.5, 4))
            for i in shown:
                label = None if classes.k == 2 else classes.names[i]
                display.from_predictions(labels == i, probs[:, i], ax=ax, name=label)
            ax.set_title(f"{name}: {title}")
            paths.append(out_dir / file)
            fig.tight_layout()
            fig.savefig(paths[-1], dpi=110)
            plt.close(fig)
    return paths


def save_comparison_plot(scores: dict[str, dict[str, float]], path: Path, labels: tuple[str, str]) -> Path:
    """Production vs candidate on each hold-out: grouped accuracy and F1 bars. ``scores``
    maps ``<who>_<hold-out>`` (who: production, candidate; hold-out: golden, new) to metrics;
    ``labels`` names the two models in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    holdouts = [h for h in ("golden", "new") if f"production_{h}" in scores and f"candidate_{h}" in scores]
    names = {"golden": "golden IMDB", "new": "new-domain"}
    groups = [(h, m) for h in holdouts for m in ("accuracy", "f1")]
    pos = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for offset, who, label in ((-0.2, "production", labels[0]), (0.2, "candidate", labels[1])):
        values = [scores[f"{who}_{h}"][m] for h, m in groups]
        ax.bar(pos + offset, values, 0.4, label=label)
        for x, v in zip(pos + offset, values, strict=True):
            ax.text(x, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
    ax.set_xticks(pos, [f"{names[h]}\n{'F1' if m == 'f1' else m}" for h, m in groups])
    ax.set_ylim(0, 1.2)
    ax.set_ylabel("score")
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    ax.set_title("Before / after: production vs candidate on the hold-outs")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
