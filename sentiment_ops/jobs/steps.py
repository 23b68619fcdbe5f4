"""The steps a fine-tuning job composes around its tracked run (``recipe.run_plan``).

Every step takes its collaborators as arguments (a ``Registry``, a ``TrackedRun``), the way
httpx takes a ``transport=``: the jobs read as a list of steps, and tests hand in real
local ones.

    evaluate(model, split, batch_size)     metrics and predictions of the model on a split
    log_evaluation(run, split, pred, title)  plots and classification report of a split
    log_model(registry, run, settings, model, meta)  the resolved config and the pyfunc model
    log_model_metrics(run, model_id, metrics, datasets)  final metrics, on the model page too
    attach_reference(settings, registry, run_id, model, plan)  drift reference embeddings

Registering and promoting are ``Registry.register`` and ``Registry.promote``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sentiment_ops.errors import DataError
from sentiment_ops.evaluation import binary_scores, classification_metrics, classification_report, save_plots
from sentiment_ops.redaction import redact_value

if TYPE_CHECKING:
    from sentiment_ops.config import Settings
    from sentiment_ops.data import Split
    from sentiment_ops.drift.reference import ReferencePlan
    from sentiment_ops.modeling import Prediction, SentimentModel
    from sentiment_ops.tracking.registry import Registry
    from sentiment_ops.tracking.runs import LoggedSplit, TrackedRun

# progress(stage, done, total): the CLI draws it with rich; the library never prints.
ProgressFn = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    return None


def evaluate(model: SentimentModel, split: Split, batch_size: int) -> tuple[dict[str, float], Prediction]:
    """The model's metrics on ``split`` and its predictions (with embeddings). A binary
    split scores a model with more classes on its two poles (``evaluation.binary_scores``)."""
    pred = model.predict(split.texts, batch_size=batch_size, with_embeddings=True)
    return split_metrics(split, pred), pred


def split_metrics(split: Split, pred: Prediction) -> dict[str, float]:
    """Metrics of ``pred`` against ``split``'s labels, whose classes must be the model's, or
    binary when the model's classes include negative and positive."""
    if split.classes == pred.classes:
        return classification_metrics(split.labels, pred.probabilities, pred.classes)
    poles = binary_scores(pred.probabilities, pred.classes) if split.classes.is_binary else None
    if poles is None:
        raise DataError(f"cannot score a {pred.classes} model on {split.classes} labels")
    return classification_metrics(split.labels, poles)


def prefixed(prefix: str, metrics: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def log_evaluation(run: TrackedRun, split: Split, pred: Prediction, title: str, subdir: str | None = None) -> None:
    """Confusion matrix, ROC and PR curves (``plots/``) and the classification report
    (``reports/``) of ``pred`` on ``split`` (in ``plots/<subdir>/`` and ``reports/<subdir>/``
    with ``subdir``)."""
    under = f"/{subdir}" if subdir else ""
    with tempfile.TemporaryDirectory() as tmp:
        plots, reports = Path(tmp) / "plots", Path(tmp) / "reports"
        save_plots(split.labels, pred.probabilities, plots, title, pred.classes)
        run.log_artifacts(plots, f"plots{under}")
        reports.mkdir()
        report = classification_report(split.labels, pred.probabilities, pred.classes)
        (reports / "classification_report.txt").write_text(report)
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
    settings: Settings,
    registry: Registry,
    run_id: str,
    model: SentimentModel,
    progress: ProgressFn = no_progress,
    plan: ReferencePlan | None = None,
) -> None:
    """Compute the model's reference embeddings for drift (with the serving backend: the
    space the server will log) and log them to ``run_id``: from ``plan`` (a retrain's served
    texts), else ``train.reference_samples`` texts of ``drift.reference_data``; nothing when
    ``train.reference_samples`` is 0."""
    from sentiment_ops.drift.reference import ReferencePlan, embed_and_log

    if settings.train.reference_samples <= 0:
        return
    progress("reference", 0, 1)
    cfg = settings.drift
    embed_and_log(
        registry,
        run_id,
        model,
        plan or ReferencePlan(cfg.reference_data, settings.train.reference_samples, cfg.calibration_samples),
        backend=settings.serve.backend,
        max_tokens=settings.serve.batch_max_tokens,
    )
    progress("reference", 1, 1)
