"""Drift checks as MLflow metrics: one monitoring run per model version (experiment
``<experiment>-monitoring``), each check logged with step = the store's check id."""

from __future__ import annotations

import time
from collections.abc import Mapping

from sentiment_ops.config import Settings
from sentiment_ops.tracking.client import mlflow_errors
from sentiment_ops.tracking.registry import Registry

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


def log_monitoring_metrics(
    registry: Registry, settings: Settings, version: int, metrics: Mapping[str, float], step: int
) -> str:
    """Log ``metrics`` at ``step`` (a drift check's id) to the monitoring run of ``version``,
    and record ``step`` as the run's last check; returns the run id."""
    from mlflow.entities import Metric

    run_id = _monitoring_run(registry, settings, version)
    now = int(time.time() * 1000)
    with mlflow_errors(f"log drift check to run {run_id}"):
        registry.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
        registry.client.set_tag(run_id, "sentops.last_check_id", str(step))
    return run_id
