"""Retraining from real feedback labels, with replay, and the champion/challenger gate.

``retrain`` (``sentops retrain``):

1. reads the labeled rows of the inference store (feedback labels; never the model's own
   predictions, unless ``pseudo_label_threshold`` is given), one row per distinct text;
2. splits them, stratified and seeded, into training rows and a new-domain hold-out, and
   mixes a replay sample of the original training data into the training rows;
3. fine-tunes starting from the *production* version's weights;
4. scores production and candidate on the golden IMDB hold-out and the new-domain hold-out,
   logs one MLflow run (both models' metrics, lineage tags, the model, reference
   embeddings), registers the new version and points ``retrain.candidate_alias`` at it;
5. applies the gate (new-domain F1 gain ≥ δ and golden accuracy drop ≤ ε) and, only when
   asked and when it passes, moves production (``serve.alias``). A failing gate never
   promotes; when promotion was asked for and not done, ``CandidateNotPromoted`` (a
   ``GateFailedError``) carries the result.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sentiment_ops.config import Settings
from sentiment_ops.data import Split, golden_test, load_corpus
from sentiment_ops.errors import ConfigError, GateFailedError, NotFoundError
from sentiment_ops.feedback_dataset import FeedbackData, concat, feedback_data, replay_data_name
from sentiment_ops.gate import GateDecision, describe, gate
from sentiment_ops.lifecycle import ProgressFn, no_progress
from sentiment_ops.store import InferenceStore, using_store

if TYPE_CHECKING:
    from sentiment_ops.modeling import Prediction, SentimentModel
    from sentiment_ops.tracking.registry import Registry, VersionInfo
    from sentiment_ops.tracking.runs import LoggedSplit, TrackedRun
    from sentiment_ops.training import FitOptions

PSEUDO_TAG = "sentops.pseudo_labels"
TRIGGER_TAG = "sentops.triggered_by"


@dataclass
class RetrainResult:
    run_id: str
    version: int
    parent_version: int
    model_uri: str
    promoted: bool
    promote_requested: bool
    gate: GateDecision
    metrics: dict[str, float]
    data: dict[str, Any]
    pseudo_labels: bool
    triggered_by: str | None
    train_seconds: float
    production_alias: str
    candidate_alias: str
    note: str = ""  # e.g. production moved while retraining

    @property
    def promote_hint(self) -> str:
        return f"sentops promote --version {self.version}"

    def summary(self) -> str:
        if self.promoted:
            return f"gate passed: version {self.version} is now {self.production_alias} (was {self.parent_version})"
        if self.note:
            return f"{self.note}; promote by hand with `{self.promote_hint}`"
        if self.gate.passed:
            return (
                f"gate passed; version {self.version} is the {self.candidate_alias}: "
                f"promote it with `{self.promote_hint}`"
            )
        return (
            f"gate failed ({'; '.join(self.gate.reasons)}); version {self.version} stays the {self.candidate_alias}. "
            f"To promote it anyway: `{self.promote_hint}`"
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["summary"] = self.summary()
        return out


class CandidateNotPromoted(GateFailedError):
    """Promotion was asked for (``promote_if_better``) and not done: the gate failed, or
    production moved while retraining. ``result`` is the full outcome (the candidate is
    registered), so a caller can still show the comparison."""

    def __init__(self, result: RetrainResult) -> None:
        reason = "; ".join(result.gate.reasons) if not result.gate.passed else result.note
        super().__init__(f"candidate version {result.version} was not promoted ({reason})")
        self.result = result


@dataclass
class RetrainRequest:
    """The options of one retraining, validated, defaults taken from ``retrain`` settings."""

    window: int | None
    since: datetime | None
    replay_ratio: float
    pseudo_label_threshold: float | None
    fit: FitOptions

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        window: int | None = None,
        since: datetime | None = None,
        replay_ratio: float | None = None,
        epochs: float | None = None,
        pseudo_label_threshold: float | None = None,
    ) -> RetrainRequest:
        from sentiment_ops.training import FitOptions

        cfg = settings.retrain
        replay_ratio = cfg.replay_ratio if replay_ratio is None else replay_ratio
        if window is None and since is None:
            window = cfg.window
        fit = FitOptions.from_retrain_settings(settings, epochs)
        if replay_ratio < 0 or fit.epochs <= 0 or (window is not None and window < 1):
            raise ConfigError("replay ratio must be ≥ 0, epochs > 0 and window ≥ 1")
        if pseudo_label_threshold is not None and not 0.5 <= pseudo_label_threshold <= 1.0:
            raise ConfigError(f"pseudo-label threshold must be between 0.5 and 1, got {pseudo_label_threshold}")
        return cls(window, since, replay_ratio, pseudo_label_threshold, fit)


@dataclass
class RetrainData:
    feedback: FeedbackData
    replay_name: str
    replay: Split
    train: Split  # feedback training rows + replay
    golden: Split

    def describe(self) -> dict[str, Any]:
        fb = self.feedback
        return {
            "labels_real": fb.real,
            "labels_pseudo": fb.pseudo,
            "labels_train": len(fb.train),
            "labels_holdout": len(fb.holdout),
            "labels_skipped_no_text": fb.skipped_no_text,
            "train_label_counts": fb.train.label_counts(),
            "holdout_label_counts": fb.holdout.label_counts(),
            "replay_data": self.replay_name,
            "replay_size": len(self.replay),
            "train_size": len(self.train),
            "golden_size": len(self.golden),
            "feedback_hash": fb.train.hash,
            "holdout_hash": fb.holdout.hash,
            "replay_hash": self.replay.hash,
            "train_hash": self.train.hash,
            "golden_hash": self.golden.hash,
        }


def _read_feedback(settings: Settings, store: InferenceStore | None, req: RetrainRequest) -> FeedbackData:
    """The feedback rows, from ``store`` (or the settings' store, opened and closed here)."""
    with using_store(settings, store) as opened:
        return feedback_data(
            opened, settings, window=req.window, since=req.since, pseudo_label_threshold=req.pseudo_label_threshold
        )


def _production(registry: Registry, alias: str) -> VersionInfo:
    version = registry.alias_version(alias)
    if version is None:
        raise NotFoundError(f"no {alias} version to retrain from: run `sentops promote --version N` first")
    return registry.get_version(version)


def _with_replay(settings: Settings, fb: FeedbackData, parent: VersionInfo, req: RetrainRequest) -> RetrainData:
    name = replay_data_name(settings, parent.tags)
    replay = load_corpus(name).train.sample(round(req.replay_ratio * len(fb.train)), seed=settings.train.seed)
    return RetrainData(fb, name, replay, concat(fb.train, replay), golden_test(settings.retrain.golden_samples))


def _score(
    who: str, model: SentimentModel, data: RetrainData, batch_size: int, progress: ProgressFn, steps: tuple[int, int]
) -> tuple[dict[str, dict[str, float]], dict[str, Prediction]]:
    """``<who>_golden`` and (with a hold-out) ``<who>_new`` metrics of ``model``, and its
    predictions on each hold-out (``golden``, ``new``)."""
    from sentiment_ops.lifecycle import evaluate

    scores, preds = {}, {}
    scores[f"{who}_golden"], preds["golden"] = evaluate(model, data.golden, batch_size)
    if len(data.feedback.holdout):
        scores[f"{who}_new"], preds["new"] = evaluate(model, data.feedback.holdout, batch_size)
    progress("evaluate", *steps)
    return scores, preds


def logged_splits(data: RetrainData) -> dict[str, LoggedSplit]:
    """The retrain run's dataset inputs by metric prefix: the feedback labels and the replay
    rows (training), the new-domain hold-out (validation) and the golden hold-out."""
    from sentiment_ops.tracking.runs import LoggedSplit

    fb = data.feedback
    store = "feedback labels from the inference store"
    out = {
        "feedback": LoggedSplit("feedback-train", "training", fb.train, store),
        "replay": LoggedSplit(f"{data.replay_name}-replay", "training", data.replay, f"{data.replay_name} train split"),
        "candidate_golden": LoggedSplit("imdb-golden", "golden", data.golden, "imdb test split (first rows)"),
    }
    out["golden"] = out["candidate_golden"]
    if len(fb.holdout):
        out["candidate_new"] = LoggedSplit("feedback-holdout", "validation", fb.holdout, store)
    return out


def version_description(
    data: RetrainData, parent: VersionInfo, metrics: dict[str, float], decision: GateDecision
) -> str:
    """What the MLflow UI shows on the version's page: the data, the scores of both models
    on both hold-outs, and the gate's decision with its numbers."""
    fb = data.feedback
    labels = f"{len(fb.train)} feedback labels" + (f" ({fb.pseudo} of them pseudo-labels)" if fb.pseudo else "")
    lines = [
        f"Retrained by `sentops retrain` from version {parent.version} on {labels} "
        f"+ {len(data.replay)} {data.replay_name} replay rows (train `{data.train.hash}`).",
        "",
        f"Golden IMDB hold-out ({len(data.golden)} rows): accuracy {metrics['candidate_golden_accuracy']:.4f} "
        f"(production {metrics['production_golden_accuracy']:.4f}), F1 {metrics['candidate_golden_f1']:.4f} "
        f"(production {metrics['production_golden_f1']:.4f}).",
    ]
    if "candidate_new_f1" in metrics:
        lines.append(
            f"New-domain hold-out ({len(fb.holdout)} labels): accuracy {metrics['candidate_new_accuracy']:.4f} "
            f"(production {metrics['production_new_accuracy']:.4f}), F1 {metrics['candidate_new_f1']:.4f} "
            f"(production {metrics['production_new_f1']:.4f})."
        )
    gate_line = describe(decision)
    lines += ["", f"{gate_line[:1].upper()}{gate_line[1:]}."]
    return "\n".join(lines)


def _run_tags(data: RetrainData, parent: VersionInfo, req: RetrainRequest, triggered_by: Any) -> dict[str, str]:
    from sentiment_ops.provenance import git_commit
    from sentiment_ops.tracking.registry import PARENT_TAG

    return _tags(
        {
            "sentops.kind": "retrain",
            "sentops.data": "feedback",
            "sentops.replay_data": data.replay_name,
            "sentops.base_model": parent.tags.get("sentops.base_model"),
            "sentops.git_commit": git_commit(),
            PARENT_TAG: parent.version,
            TRIGGER_TAG: triggered_by,
            PSEUDO_TAG: "true" if req.pseudo_label_threshold is not None else "false",
            **{f"sentops.{k}": v for k, v in data.describe().items() if not isinstance(v, dict)},
        }
    )


def _run_params(
    settings: Settings, data: RetrainData, parent: VersionInfo, req: RetrainRequest, model: SentimentModel
) -> dict[str, str]:
    from sentiment_ops import __version__

    cfg = settings.retrain
    return _tags(
        {
            "parent_version": parent.version,
            "epochs": req.fit.epochs,
            "learning_rate": req.fit.learning_rate,
            "batch_size": req.fit.batch_size,
            "replay_ratio": req.replay_ratio,
            "holdout_fraction": cfg.holdout_fraction,
            "window": req.window,
            "since": req.since.isoformat() if req.since else None,
            "pseudo_label_threshold": req.pseudo_label_threshold,
            "min_f1_gain": cfg.min_f1_gain,
            "max_acc_drop": cfg.max_acc_drop,
            "max_length": model.max_length,
            "head_tokens": model.head_tokens,
            "seed": req.fit.seed,
            "sentops_version": __version__,
            **{k: v for k, v in data.describe().items() if not isinstance(v, dict)},
        }
    )


def _compare(scores: dict[str, dict[str, float]], settings: Settings) -> tuple[dict[str, float], GateDecision]:
    """The run's metrics (both models', and the gate's numbers) and the gate's decision."""
    metrics = {f"{k}_{m}": v for k, vals in scores.items() for m, v in vals.items()}
    decision = gate(
        candidate_new_f1=metrics.get("candidate_new_f1"),
        production_new_f1=metrics.get("production_new_f1"),
        candidate_golden_acc=metrics["candidate_golden_accuracy"],
        production_golden_acc=metrics["production_golden_accuracy"],
        min_f1_gain=settings.retrain.min_f1_gain,
        max_acc_drop=settings.retrain.max_acc_drop,
    )
    metrics["golden_accuracy"] = metrics["candidate_golden_accuracy"]  # what `sentops models` lists
    metrics["golden_f1"] = metrics["candidate_golden_f1"]
    metrics["golden_acc_drop"] = decision.golden_acc_drop
    if decision.f1_gain is not None:
        metrics["new_f1_gain"] = decision.f1_gain
    metrics["gate_passed"] = float(decision.passed)
    return metrics, decision


def _promote_if_unchanged(registry: Registry, version: int, parent: int, alias: str) -> tuple[bool, str]:
    """Move ``alias`` to ``version`` unless it left ``parent`` meanwhile (then the
    comparison is stale): (promoted, note)."""
    current = registry.alias_version(alias)
    if current != parent:
        return False, f"{alias} moved from version {parent} to {current} during retraining; not promoted"
    registry.promote(version, alias)
    return True, ""


def _tags(values: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v is not None}


@dataclass
class _Job:
    """What the retraining run works with."""

    settings: Settings
    registry: Registry
    data: RetrainData
    parent: VersionInfo
    req: RetrainRequest
    progress: ProgressFn


@dataclass
class _Logged:
    """The retraining run, once it has ended."""

    run_id: str
    model_uri: str  # the logged model (models:/<model_id>), the version's source
    metrics: dict[str, float]
    decision: GateDecision
    seconds: float


def _tracked_retrain(
    job: _Job,
    model: SentimentModel,
    scores: dict[str, dict[str, float]],
    triggered_by: Any,
) -> _Logged:
    """The MLflow run of one retraining: fine-tune ``model`` (production's weights) in place,
    score it, compare it with production's ``scores`` (gate), and log the datasets, metrics
    (linked to the logged model), plots, the model and its reference embeddings."""
    from sentiment_ops import lifecycle
    from sentiment_ops.tracking.runs import tracked_run
    from sentiment_ops.training import fine_tune

    settings, data, parent, req, progress = job.settings, job.data, job.parent, job.req, job.progress
    bs, steps = settings.train.eval_batch_size, 4 if len(data.feedback.holdout) else 2
    splits = logged_splits(data)
    tags = _run_tags(data, parent, req, triggered_by)
    with tracked_run(job.registry, f"retrain-from-v{parent.version}", tags) as run:
        run.log_params(_run_params(settings, data, parent, req, model))
        run.log_datasets(list({id(s): s for s in splits.values()}.values()))
        seconds = fine_tune(model, data.train, None, req.fit, progress=progress, on_metrics=run.log_metrics)
        after_scores, after = _score("candidate", model, data, bs, progress, (steps, steps))
        scores = {**scores, **after_scores}
        metrics, decision = _compare(scores, settings)
        metrics["train_seconds"] = seconds
        run.log_text(
            json.dumps({"gate": asdict(decision), "data": data.describe()}, indent=2), "retrain/comparison.json"
        )
        _log_plots(run, data, scores, after, parent.version)
        info = lifecycle.log_model(
            job.registry, run, settings, model, {"data": "feedback", "run_id": run.run_id}, progress
        )
        linked: dict[str, LoggedSplit | None] = {**splits, "train": None}  # train_seconds: on no one split
        lifecycle.log_model_metrics(run, info.model_id, metrics, linked)
        lifecycle.attach_reference(settings, job.registry, run.run_id, model, progress)
    return _Logged(run.run_id, info.model_uri, metrics, decision, seconds)


def _log_plots(
    run: TrackedRun, data: RetrainData, scores: dict[str, dict[str, float]], after: dict[str, Prediction], parent: int
) -> None:
    """The candidate's confusion matrix, ROC and PR curves, as a train run logs them
    (``plots/``: on the new-domain hold-out, or the golden one without it; ``plots/golden/``),
    and the before/after comparison of production and candidate (``plots/before_after.png``)."""
    import tempfile
    from pathlib import Path

    from sentiment_ops.evaluation import save_comparison_plot
    from sentiment_ops.lifecycle import log_evaluation

    if "new" in after:
        log_evaluation(run, data.feedback.holdout, after["new"], "new-domain hold-out")
        log_evaluation(run, data.golden, after["golden"], "golden IMDB", subdir="golden")
    else:
        log_evaluation(run, data.golden, after["golden"], "golden IMDB")
    with tempfile.TemporaryDirectory() as tmp:
        path = save_comparison_plot(
            scores, Path(tmp) / "before_after.png", (f"production (v{parent})", "candidate (retrained)")
        )
        run.log_artifacts(path.parent, "plots")


def retrain(
    settings: Settings,
    *,
    registry: Registry | None = None,
    store: InferenceStore | None = None,
    window: int | None = None,
    since: datetime | None = None,
    replay_ratio: float | None = None,
    epochs: float | None = None,
    promote_if_better: bool = False,
    pseudo_label_threshold: float | None = None,
    triggered_by: int | str | None = None,
    progress: ProgressFn = no_progress,
) -> RetrainResult:
    """``sentops retrain``: see the module docstring. ``registry`` and ``store`` default to
    the ones the settings name. Raises NotEnoughDataError (too few labels, nothing
    registered), NotFoundError (no production version) and, with ``promote_if_better``,
    CandidateNotPromoted when the candidate was registered but not promoted."""
    from sentiment_ops.tracking.registry import PARENT_TAG, Registry

    req = RetrainRequest.from_settings(settings, window, since, replay_ratio, epochs, pseudo_label_threshold)
    production, candidate = settings.serve.alias, settings.retrain.candidate_alias
    progress("data", 0, 1)
    fb = _read_feedback(settings, store, req)
    registry = registry or Registry(settings)
    parent = _production(registry, production)
    data = _with_replay(settings, fb, parent, req)
    progress("data", 1, 1)
    progress("load model", 0, 1)
    model = registry.load_model(parent.version)
    progress("load model", 1, 1)
    bs, steps = settings.train.eval_batch_size, 4 if len(fb.holdout) else 2
    progress("evaluate", 0, steps)
    scores, _ = _score("production", model, data, bs, progress, (steps // 2, steps))
    logged = _tracked_retrain(_Job(settings, registry, data, parent, req, progress), model, scores, triggered_by)
    decision, metrics, seconds = logged.decision, logged.metrics, logged.seconds
    description = version_description(data, parent, metrics, decision)
    tags = {PARENT_TAG: str(parent.version)}
    version = registry.register(logged.run_id, tags=tags, source=logged.model_uri, description=description).version
    registry.promote(version, candidate)
    promoted, note = False, ""
    if promote_if_better and decision.passed:
        promoted, note = _promote_if_unchanged(registry, version, parent.version, production)
    result = RetrainResult(
        run_id=logged.run_id,
        version=version,
        parent_version=parent.version,
        model_uri=registry.model_uri(version),
        promoted=promoted,
        promote_requested=promote_if_better,
        gate=decision,
        metrics=metrics,
        data=data.describe(),
        pseudo_labels=req.pseudo_label_threshold is not None,
        triggered_by=None if triggered_by is None else str(triggered_by),
        train_seconds=seconds,
        production_alias=production,
        candidate_alias=candidate,
        note=note,
    )
    if promote_if_better and not promoted:
        raise CandidateNotPromoted(result)
    return result
