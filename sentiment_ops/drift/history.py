"""The record of drift checks in the inference store; the history as a table and a plot.
Each check is also logged as metrics of an MLflow monitoring run (``tracking.monitoring``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sentiment_ops.config import Settings
from sentiment_ops.errors import DataError, NotEnoughDataError
from sentiment_ops.inference.passes import PROBABILITY_PREFIX, probability_columns
from sentiment_ops.labels import LabelSet
from sentiment_ops.store import using_store
from sentiment_ops.tracking.monitoring import log_monitoring_metrics
from sentiment_ops.tracking.registry import Registry

if TYPE_CHECKING:
    from sentiment_ops.drift.detectors import DriftReport


def check_metrics(report: DriftReport) -> dict[str, float]:
    """What the monitoring run records of one check: statistics and counts, never texts."""
    values = {
        "drift_detected": float(report.drift),
        "drift_p_value": report.p_value,
        "drift_mmd2": report.mmd2,
        "drift_mmd_p_value": report.mmd_p_value,
        "drift_cosine_distance": report.cosine_distance,
        "drift_window_rows": float(report.n_rows),
        "drift_check_seconds": report.seconds,
    }
    if report.nn_p_value is not None and report.nn_distance2 is not None:
        values["drift_nn_distance2"] = report.nn_distance2
        values["drift_nn_p_value"] = report.nn_p_value
    mix = report.label_mix
    if mix:
        if mix.get("window_positive") is not None:
            values["drift_window_positive_share"] = float(mix["window_positive"])
        values["drift_label_p_value"] = float(mix["p_value"])
        shares = mix.get("window_shares") or {}
        names = probability_columns(LabelSet(tuple(shares))) if len(shares) >= 2 else []
        for column, share in zip(names, shares.values(), strict=True):  # p_<class> → drift_window_share_<class>
            values["drift_window_share_" + column[len(PROBABILITY_PREFIX) :]] = float(share)
    return values


def log_check_to_mlflow(registry: Registry, settings: Settings, report: DriftReport, check_id: int) -> str:
    """Log one check as metrics (step = the store's check id) of the version's monitoring run."""
    assert report.model_version is not None
    return log_monitoring_metrics(registry, settings, report.model_version, check_metrics(report), check_id)


def drift_history(settings: Settings, limit: int = 1000, version: int | None = None) -> list[dict[str, Any]]:
    """The ``limit`` most recent checks of the configured model (of one ``version`` when
    given), oldest first."""
    with using_store(settings) as store:
        return store.drift_history(settings.mlflow.model_name, limit=limit, version=version)


def plot_history(history: list[dict[str, Any]], path: Path, alpha: float, threshold: float) -> Path:
    """Two panels over time: the MMD² p-value (log scale, with alpha) and the seed's cosine
    score (with its threshold); checks that found drift are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        raise NotEnoughDataError("no drift checks recorded yet: run `sentops drift` first")
    times = [h["created_at"] for h in history]
    p = [max(h["p_value"] or 1.0, 1e-6) for h in history]
    cos = [h["cosine_distance"] or 0.0 for h in history]
    drift = np.array([bool(h["drift"]) for h in history])
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    ax1.plot(times, p, marker="o", color="tab:blue", label="drift test p-value")
    ax1.axhline(alpha, color="tab:red", linestyle="--", label=f"alpha {alpha:g}")
    if drift.any():
        ax1.scatter(
            [t for t, d in zip(times, drift, strict=True) if d],
            np.array(p)[drift],
            color="tab:red",
            zorder=3,
            label="drift",
        )
    ax1.set_yscale("log")
    ax1.set_ylim(min([*p, alpha]) / 2, 1.5)
    ax1.set_ylabel("p-value")
    ax1.legend(loc="upper right", fontsize=8)
    ax2.plot(times, cos, marker="o", color="tab:green", label="cosine distance of centroids")
    ax2.axhline(threshold, color="tab:gray", linestyle="--", label=f"seed threshold {threshold:g}")
    ax2.set_ylabel("cosine distance")
    ax2.legend(loc="center right", fontsize=8)
    fig.suptitle(f"drift checks of {history[-1]['model_name']}")
    fig.autofmt_xdate()
    fig.tight_layout()
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise DataError(f"cannot write plot: folder {path.parent} does not exist")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
