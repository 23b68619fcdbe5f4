"""Classification metrics and the plots logged with every training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from sentiment_ops.data import LABEL_NAMES


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive class), ROC AUC and log loss."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    preds = (probs >= 0.5).astype(np.int64)
    out = {
        "accuracy": float(skm.accuracy_score(labels, preds)),
        "precision": float(skm.precision_score(labels, preds, zero_division=0)),
        "recall": float(skm.recall_score(labels, preds, zero_division=0)),
        "f1": float(skm.f1_score(labels, preds, zero_division=0)),
        "loss": float(skm.log_loss(labels, probs, labels=[0, 1])),
    }
    if len(np.unique(labels)) == 2:
        out["roc_auc"] = float(skm.roc_auc_score(labels, probs))
    return out


def classification_report(labels: np.ndarray, probabilities: np.ndarray) -> str:
    preds = (np.asarray(probabilities) >= 0.5).astype(np.int64)
    return str(
        skm.classification_report(
            labels, preds, labels=[0, 1], target_names=list(LABEL_NAMES), digits=4, zero_division=0
        )
    )


def save_plots(labels: np.ndarray, probabilities: np.ndarray, out_dir: Path, title: str) -> list[Path]:
    """Confusion matrix, ROC curve and precision-recall curve as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    preds = (np.asarray(probabilities) >= 0.5).astype(np.int64)
    paths = []

    fig, ax = plt.subplots(figsize=(4.5, 4))
    skm.ConfusionMatrixDisplay.from_predictions(labels, preds, display_labels=list(LABEL_NAMES), ax=ax, colorbar=False)
    ax.set_title(f"Confusion matrix: {title}")
    paths.append(out_dir / "confusion_matrix.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    if len(np.unique(labels)) == 2:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        skm.RocCurveDisplay.from_predictions(labels, probabilities, ax=ax)
        ax.set_title(f"ROC: {title}")
        paths.append(out_dir / "roc_curve.png")
        fig.tight_layout()
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(4.5, 4))
        skm.PrecisionRecallDisplay.from_predictions(labels, probabilities, ax=ax)
        ax.set_title(f"Precision-recall: {title}")
        paths.append(out_dir / "pr_curve.png")
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
