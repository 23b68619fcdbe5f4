"""What the MLflow UI shows for a train run and a retrain run, read back through
``MlflowClient``: the datasets of the run page, the metrics of the logged model's page, the
description of each model version, the plots of the retrain run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_retrain import _log_tweets

from sentiment_ops.config import load_settings
from sentiment_ops.jobs.retrain import retrain
from sentiment_ops.tracking.registry import Registry

MODEL = "sentiment-classifier"


def _inputs(client: Any, run_id: str) -> dict[str, tuple[str, str]]:
    """The run's dataset inputs: name → (digest, context)."""
    out = {}
    for di in client.get_run(run_id).inputs.dataset_inputs:
        tags = {t.key: t.value for t in di.tags}
        out[di.dataset.name] = (di.dataset.digest, tags["mlflow.data.context"])
    return out


def _model_metrics(client: Any, model_uri: str) -> dict[str, Any]:
    """The metrics on the logged model's page (``models:/<model_id>``), by name."""
    model = client.get_logged_model(model_uri.removeprefix("models:/"))
    return {m.key: m for m in model.metrics or []}


@pytest.fixture()
def mlflow_warnings() -> Iterator[list[str]]:
    """What MLflow's pyfunc logger warns while logging models (MLflow's loggers do not
    propagate to pytest's capture)."""
    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("mlflow.pyfunc")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_train_run_datasets_model_metrics_and_description(trained: dict[str, Any]) -> None:
    registry = Registry(load_settings())
    client, run_id = registry.client, trained["run_id"]
    params = client.get_run(run_id).data.params
    assert _inputs(client, run_id) == {
        "imdb-train": (params["train_hash"], "training"),
        "imdb-validation": (params["validation_hash"], "validation"),
        "imdb-golden": (params["golden_hash"], "golden"),
    }

    metrics = _model_metrics(client, trained["model_uri"])
    run_metrics = client.get_run(run_id).data.metrics
    for key in ("golden_accuracy", "golden_f1", "val_f1", "test_accuracy", "train_seconds"):
        assert metrics[key].value == pytest.approx(run_metrics[key])
    assert (metrics["golden_f1"].dataset_name, metrics["golden_f1"].dataset_digest) == (
        "imdb-golden",
        params["golden_hash"],
    )
    assert metrics["val_accuracy"].dataset_name == "imdb-validation"
    # linking the metrics to the model logged nothing twice in the run
    assert len(client.get_metric_history(run_id, "golden_accuracy")) == 1

    description = client.get_model_version(MODEL, "1").description
    assert "Trained by `sentops train`" in description and "48 rows of imdb" in description
    assert f"accuracy {run_metrics['golden_accuracy']:.4f}, F1 {run_metrics['golden_f1']:.4f}" in description
    assert params["train_hash"] in description


@pytest.mark.parametrize("min_f1_gain", ["-1", "5"])  # a gate that passes, one that fails
def test_retrain_run_datasets_plots_model_metrics_and_description(
    cli: Callable[..., Any],
    trained: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    mlflow_warnings: list[str],
    min_f1_gain: str,
) -> None:
    for key, value in {"MIN_LABELS": "20", "GOLDEN_SAMPLES": "40", "MIN_F1_GAIN": min_f1_gain}.items():
        monkeypatch.setenv(f"SENTOPS_RETRAIN__{key}", value)
    monkeypatch.setenv("SENTOPS_RETRAIN__MAX_ACC_DROP", "1")
    assert cli("promote", "--version", "1").exit_code == 0
    _log_tweets(50, labeled=True)
    settings = load_settings()
    registry = Registry(settings)
    result = retrain(settings, registry=registry)
    client, run_id = registry.client, result.run_id
    tags = client.get_run(run_id).data.tags

    assert _inputs(client, run_id) == {
        "feedback-train": (tags["sentops.feedback_hash"], "training"),
        "imdb-replay": (tags["sentops.replay_hash"], "training"),
        "feedback-holdout": (tags["sentops.holdout_hash"], "validation"),
        "imdb-golden": (tags["sentops.golden_hash"], "golden"),
    }

    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {f"plots/{n}.png" for n in ("confusion_matrix", "roc_curve", "pr_curve", "before_after")} <= plots
    golden_plots = {a.path for a in client.list_artifacts(run_id, "plots/golden")}
    assert "plots/golden/confusion_matrix.png" in golden_plots

    model_uri = registry.get_version(result.version).source
    metrics = _model_metrics(client, model_uri)
    assert metrics["candidate_new_f1"].value == pytest.approx(result.metrics["candidate_new_f1"])
    assert (metrics["candidate_new_f1"].dataset_name, metrics["candidate_new_f1"].dataset_digest) == (
        "feedback-holdout",
        tags["sentops.holdout_hash"],
    )
    assert metrics["golden_accuracy"].dataset_name == "imdb-golden"
    assert not any(key.startswith("production_") for key in metrics)  # production's scores are not this model's

    m = result.metrics
    description = client.get_model_version(MODEL, str(result.version)).description
    assert f"from version 1 on {result.data['labels_train']} feedback labels" in description
    assert f"accuracy {m['candidate_golden_accuracy']:.4f} (production {m['production_golden_accuracy']:.4f})" in (
        description
    )
    assert f"F1 {m['candidate_new_f1']:.4f} (production {m['production_new_f1']:.4f})" in description
    assert f"new-domain F1 gain {m['new_f1_gain']:+.4f}" in description
    assert ("Gate passed" if result.gate.passed else "Gate failed") in description
    assert result.gate.passed is (min_f1_gain == "-1")
    # the model is logged from code: MLflow does not warn about pickling a Python object
    assert not [w for w in mlflow_warnings if "CloudPickle" in w]
