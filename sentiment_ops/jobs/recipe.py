"""The one fine-tuning recipe that ``train`` and ``retrain`` each run with a plan of their own.

    with tracked_run(...)                  tags, params, dataset inputs
        fine_tune(model, train, val)       the plan's starting weights, in place
        plan.evaluate(model, run, seconds) the job's own metrics, plots and reports
        log_model / log_model_metrics      the pyfunc model; the metrics on its page too
        attach_reference                   drift reference embeddings (the plan's texts)
    registry.register(...)                 with the plan's description and tags

What happens before (loading data, scoring production) and after (promoting) is the job's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sentiment_ops.jobs import steps
from sentiment_ops.jobs.steps import ProgressFn, no_progress
from sentiment_ops.tracking.runs import tracked_run

if TYPE_CHECKING:
    from sentiment_ops.config import Settings
    from sentiment_ops.data import Split
    from sentiment_ops.drift.reference import ReferencePlan
    from sentiment_ops.jobs.fit import FitOptions
    from sentiment_ops.modeling import SentimentModel
    from sentiment_ops.tracking.registry import Registry
    from sentiment_ops.tracking.runs import LoggedSplit, TrackedRun

# (fine-tuned model, its run, training seconds) -> the run's final metrics
EvaluateFn = Callable[["SentimentModel", "TrackedRun", float], dict[str, float]]


@dataclass
class FineTunePlan:
    """One fine-tuning run: what it starts from, trains on, logs and registers."""

    run_name: str
    tags: dict[str, str]
    params: dict[str, Any]
    # Metric prefix -> the dataset its metrics were measured on (None: on no one dataset).
    # The run's dataset inputs are the distinct datasets named here.
    datasets: dict[str, LoggedSplit | None]
    model: SentimentModel  # the starting weights (a base model, production's), trained in place
    train: Split
    val: Split | None  # scored each epoch when there are several
    fit: FitOptions
    evaluate: EvaluateFn
    describe: Callable[[dict[str, float]], str]  # the version's description, from the final metrics
    model_meta: dict[str, Any] = field(default_factory=dict)  # logged with the model (the run id is added)
    register: bool = True
    version_tags: dict[str, str] | None = None  # besides the run's sentops.* tags, which the version copies
    reference: ReferencePlan | None = None  # the drift reference's texts (None: drift.reference_data)

    def logged_datasets(self) -> list[LoggedSplit]:
        return list({id(s): s for s in self.datasets.values() if s is not None}.values())


@dataclass
class FineTuned:
    """The plan's run, once it has ended: ``version`` is None when nothing was registered."""

    run_id: str
    model_uri: str  # the logged model (models:/<model_id>), the version's source
    version: int | None
    metrics: dict[str, float]
    seconds: float


def run_plan(
    plan: FineTunePlan, settings: Settings, registry: Registry, progress: ProgressFn = no_progress
) -> FineTuned:
    """Run ``plan`` (the module docstring's steps) and register the model it made."""
    model = plan.model
    with tracked_run(registry, plan.run_name, plan.tags) as run:
        run.log_params(plan.params)
        run.log_datasets(plan.logged_datasets())
        seconds = _fine_tune(plan, progress, run)
        metrics = plan.evaluate(model, run, seconds)
        meta = {**plan.model_meta, "run_id": run.run_id}
        info = steps.log_model(registry, run, settings, model, meta, progress)
        steps.log_model_metrics(run, info.model_id, metrics, plan.datasets)
        steps.attach_reference(settings, registry, run.run_id, model, progress, plan.reference)
    version = None
    if plan.register:
        description = plan.describe(metrics)
        registered = registry.register(
            run.run_id, tags=plan.version_tags, source=info.model_uri, description=description
        )
        version = registered.version
    return FineTuned(run.run_id, info.model_uri, version, metrics, seconds)


def _fine_tune(plan: FineTunePlan, progress: ProgressFn, run: TrackedRun) -> float:
    from sentiment_ops.jobs.fit import fine_tune  # torch and transformers load here

    return fine_tune(plan.model, plan.train, plan.val, plan.fit, progress=progress, on_metrics=run.log_metrics)
