"""The record of drift checks: each check in the inference store and as metrics of an
MLflow monitoring run (experiment ``<experiment>-monitoring``, one run per model version,
step = the store's check id); the history as a table and a plot."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sentiment_ops.config import Settings
from sentiment_ops.errors import DataError, NotEnoughDataError
from sentiment_ops.registry import Registry, mlflow_errors
from sentiment_ops.store import open_store

if TYPE_CHECKING:
    from sentiment_ops.drift.detectors import DriftReport

MONITORING_KIND = "monitoring"


def monitoring_experiment(settings: Settings) -> str:
    return f"{settings.mlflow.experiment}-monitoring"


def _monitoring_run(registry: Registry, settings: Settings, version: int) -> str:
    client = registry.client
    experiment_id = registry.experiment_id(monitoring_experiment(settings))
    with mlflow_errors("monitoring run"):
        runs = client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`sentops.kind` = '{MONITORING_KIND}' AND tags.`sentops.model_name` = '{registry.model_name}' "
                f"AND tags.`sentops.model_version` = '{version}'"
            ),
            max_results=1,
        )
        if runs:
            return str(runs[0].info.run_id)
        run = client.create_run(
            experiment_id,
            run_name=f"monitor-{registry.model_name}-v{version}",
            tags={
                "sentops.kind": MONITORING_KIND,
                "sentops.model_name": registry.model_name,
                "sentops.model_version": str(version),
            },
        )
        client.set_terminated(run.info.run_id, "FINISHED")
        return str(run.info.run_id)


def log_check_to_mlflow(registry: Registry, settings: Settings, report: DriftReport, check_id: int) -> str:
    """Log one check as metrics (step = the store's check id) of the version's monitoring run."""
    from mlflow.entities import Metric

    assert report.model_version is not None
    run_id = _monitoring_run(registry, settings, report.model_version)
    now = int(time.time() * 1000)
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
    if report.label_mix:
        values["drift_window_positive_share"] = float(report.label_mix["window_positive"])
        values["drift_label_p_value"] = float(report.label_mix["p_value"])
    with mlflow_errors(f"log drift check to run {run_id}"):
        registry.client.log_batch(run_id, metrics=[Metric(k, float(v), now, check_id) for k, v in values.items()])
        registry.client.set_tag(run_id, "sentops.last_check_id", str(check_id))
    return run_id


def drift_history(settings: Settings, limit: int = 1000, version: int | None = None) -> list[dict[str, Any]]:
    """The ``limit`` most recent checks of the configured model (of one ``version`` when
    given), oldest first."""
    store = open_store(settings.store_url, settings.store.store_text)
    try:
        return store.drift_history(settings.mlflow.model_name, limit=limit, version=version)
    finally:
        store.close()


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
