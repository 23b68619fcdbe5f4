"""The steps of a model's life that ``train``, ``retrain`` and the demo compose.

Every step takes its collaborators as arguments (a ``Registry``, a ``TrackedRun``), the way
httpx takes a ``transport=``: the orchestrations read as a list of steps, and tests hand in
real local ones. MLflow is written through its client (``registry.client``), never through
the fluent API's global run and URIs.

    tracked_run(registry, name, tags)      an MLflow run; FINISHED, or FAILED on an error
    TrackedRun.log_params / log_metrics / log_datasets / log_artifacts / log_text
    evaluate(model, split, batch_size)     metrics and predictions of the model on a split
    log_evaluation(run, split, pred, title)  plots and classification report of a split
    log_model(registry, run, settings, model, meta)  the resolved config and the pyfunc model
    log_model_metrics(run, model_id, metrics, datasets)  final metrics, on the model page too
    attach_reference(settings, registry, run_id, model)  drift reference embeddings

Registering and promoting are ``Registry.register`` and ``Registry.promote``.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sentiment_ops.evaluation import classification_metrics, classification_report, save_plots
from sentiment_ops.redaction import redact, redact_value

if TYPE_CHECKING:
    from sentiment_ops.config import Settings
    from sentiment_ops.data import Split
    from sentiment_ops.modeling import Prediction, SentimentModel
    from sentiment_ops.registry import Registry

# progress(stage, done, total): the CLI draws it with rich; the library never prints.
ProgressFn = Callable[[str, int, int], None]

_MAX_PARAMS, _MAX_METRICS = 100, 1000  # per log_batch request (MLflow's limits)


def no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass(frozen=True)
class LoggedSplit:
    """A split as the run page lists it among the run's dataset inputs: ``name``, its
    content hash as the digest, and ``context`` ("training", "validation", "golden", "test")."""

    name: str
    context: str
    split: Split
    source: str  # where the rows came from (a bundled corpus, a file, the feedback labels)

    def dataset_input(self) -> Any:
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        profile = {"num_rows": len(self.split), "label_counts": self.split.label_counts()}
        dataset = Dataset(
            name=self.name,
            digest=self.split.hash,
            source_type="sentops",
            source=json.dumps({"uri": redact(self.source)}),
            profile=json.dumps(profile),
        )
        return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, self.context)])


@dataclass
class TrackedRun:
    """One MLflow run, written through ``client``; params and texts pass through
    ``redact`` (a setting or a data source can be a URL with a password)."""

    client: Any
    run_id: str

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), redact(str(v))) for k, v in params.items()]
        for start in range(0, len(items), _MAX_PARAMS):
            self.client.log_batch(self.run_id, params=items[start : start + _MAX_PARAMS])

    def log_metrics(
        self,
        metrics: Mapping[str, float],
        step: int = 0,
        *,
        model_id: str | None = None,
        dataset: LoggedSplit | None = None,
    ) -> None:
        """Log ``metrics`` to the run; with ``model_id`` also to that logged model (its page
        shows them), as measured on ``dataset`` when given."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        name, digest = (dataset.name, dataset.split.hash) if dataset else (None, None)
        items = [Metric(str(k), float(v), now, step, model_id, name, digest) for k, v in metrics.items()]
        for start in range(0, len(items), _MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=items[start : start + _MAX_METRICS])

    def log_datasets(self, splits: list[LoggedSplit]) -> None:
        """The run's dataset inputs (the "Datasets used" of the run page)."""
        self.client.log_inputs(self.run_id, datasets=[s.dataset_input() for s in splits])

    def log_artifacts(self, local_dir: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, redact(text), artifact_file)


@contextmanager
def tracked_run(registry: Registry, run_name: str, tags: Mapping[str, str]) -> Iterator[TrackedRun]:
    """A new run in the settings' experiment, with MLflow's usual context tags (user,
    source, git) under ``tags``, all redacted; ended FINISHED, or FAILED when the block raises."""
    from mlflow.tracking.context.registry import resolve_tags

    from sentiment_ops.registry import mlflow_errors

    experiment_id = registry.experiment_id()
    with mlflow_errors(f"start run {run_name!r}"):
        run = registry.client.create_run(experiment_id, run_name=run_name, tags=redact_value(resolve_tags(dict(tags))))
    tracked = TrackedRun(registry.client, run.info.run_id)
    try:
        yield tracked
    except BaseException:
        with contextlib.suppress(Exception):  # the run's own error is the one to report
            registry.client.set_terminated(tracked.run_id, "FAILED")
        raise
    with mlflow_errors(f"end run {tracked.run_id}"):
        registry.client.set_terminated(tracked.run_id, "FINISHED")


def evaluate(model: SentimentModel, split: Split, batch_size: int) -> tuple[dict[str, float], Prediction]:
    """The model's metrics on ``split`` and its predictions (with embeddings)."""
    pred = model.predict(split.texts, batch_size=batch_size, with_embeddings=True)
    return classification_metrics(split.labels, pred.probabilities), pred


def prefixed(prefix: str, metrics: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def log_evaluation(run: TrackedRun, split: Split, pred: Prediction, title: str, subdir: str | None = None) -> None:
    """Confusion matrix, ROC and PR curves (``plots/``) and the classification report
    (``reports/``) of ``pred`` on ``split`` (in ``plots/<subdir>/`` and ``reports/<subdir>/``
    with ``subdir``)."""
    under = f"/{subdir}" if subdir else ""
    with tempfile.TemporaryDirectory() as tmp:
        plots, reports = Path(tmp) / "plots", Path(tmp) / "reports"
        save_plots(split.labels, pred.probabilities, plots, title)
        run.log_artifacts(plots, f"plots{under}")
        reports.mkdir()
        (reports / "classification_report.txt").write_text(classification_report(split.labels, pred.probabilities))
        run.log_artifacts(reports, f"reports{under}")


def log_model(
    registry: Registry,
    run: TrackedRun,
    settings: Settings,
    model: SentimentModel,
    extra_meta: dict[str, Any],
    progress: ProgressFn = no_progress,
) -> Any:
    """Log the resolved settings (``config/``, credentials masked) and the pyfunc model of
    ``run``; returns MLflow's ``ModelInfo`` (``model_uri`` is the source ``Registry.register`` takes)."""
    progress("log model", 0, 1)
    with tempfile.TemporaryDirectory() as tmp:
        config_dir = Path(tmp) / "config"
        config_dir.mkdir()
        shown = redact_value(settings.to_dict())
        (config_dir / "resolved_config.yaml").write_text(yaml.safe_dump(shown, sort_keys=False))
        run.log_artifacts(config_dir, "config")
        info = registry.log_model(run.run_id, model, Path(tmp), redact_value(extra_meta))
    progress("log model", 1, 1)
    return info


def log_model_metrics(
    run: TrackedRun, model_id: str, metrics: Mapping[str, float], datasets: Mapping[str, LoggedSplit | None]
) -> None:
    """Log the run's final ``metrics``, those of the logged model ``model_id`` linked to it:
    a metric whose name starts with ``<prefix>_`` for a key of ``datasets`` is the model's,
    measured on that dataset (``None``: on no one dataset); the others are the run's only.

    Called after ``log_model``: MLflow's ``log_model`` links the run's step-0 metrics that
    already exist to the model, without their dataset, and a metric can be linked once."""
    groups: dict[str | None, dict[str, float]] = {}
    for key, value in metrics.items():
        prefix = next((p for p in sorted(datasets, key=len, reverse=True) if key.startswith(f"{p}_")), None)
        groups.setdefault(prefix, {})[key] = value
    for prefix, values in groups.items():
        if prefix is None:
            run.log_metrics(values)
        else:
            run.log_metrics(values, model_id=model_id, dataset=datasets[prefix])


def attach_reference(
    settings: Settings, registry: Registry, run_id: str, model: SentimentModel, progress: ProgressFn = no_progress
) -> None:
    """Compute the model's reference embeddings for drift (with the serving backend: the
    space the server will log) and log them to ``run_id``; nothing when
    ``train.reference_samples`` is 0."""
    from sentiment_ops.drift.reference import embed_and_log

    if settings.train.reference_samples <= 0:
        return
    progress("reference", 0, 1)
    embed_and_log(
        registry.client,
        run_id,
        model,
        data=settings.drift.reference_data,
        samples=settings.train.reference_samples,
        backend=settings.serve.backend,
        max_tokens=settings.serve.batch_max_tokens,
        calibration=settings.drift.calibration_samples,
    )
    progress("reference", 1, 1)
