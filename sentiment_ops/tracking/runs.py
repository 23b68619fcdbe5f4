"""MLflow runs written through the registry's client, never through the fluent API's
global run and URIs: ``tracked_run`` opens one (FINISHED, or FAILED on an error) and
``TrackedRun`` logs params, metrics, dataset inputs, artifacts and texts to it, redacted."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentiment_ops.redaction import redact, redact_value
from sentiment_ops.tracking.client import mlflow_errors

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import DatasetInput

    from sentiment_ops.data import Split
    from sentiment_ops.tracking.registry import Registry

_MAX_PARAMS, _MAX_METRICS = 100, 1000  # per log_batch request (MLflow's limits)


@dataclass(frozen=True)
class LoggedSplit:
    """A split as the run page lists it among the run's dataset inputs: ``name``, its
    content hash as the digest, and ``context`` ("training", "validation", "golden", "test")."""

    name: str
    context: str
    split: Split
    source: str  # where the rows came from (a bundled corpus, a file, the feedback labels)

    def dataset_input(self) -> DatasetInput:
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

    client: MlflowClient
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

    client = registry.client
    experiment_id = registry.experiment_id()
    with mlflow_errors(f"start run {run_name!r}"):
        run = client.create_run(experiment_id, run_name=run_name, tags=redact_value(resolve_tags(dict(tags))))
    tracked = TrackedRun(client, run.info.run_id)
    try:
        yield tracked
    except BaseException:
        with contextlib.suppress(Exception):  # the run's own error is the one to report
            client.set_terminated(tracked.run_id, "FAILED")
        raise
    with mlflow_errors(f"end run {tracked.run_id}"):
        client.set_terminated(tracked.run_id, "FINISHED")
