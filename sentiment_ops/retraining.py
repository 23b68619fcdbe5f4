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
from sentiment_ops.gate import GateDecision, gate
from sentiment_ops.lifecycle import ProgressFn, no_progress
from sentiment_ops.store import InferenceStore

if TYPE_CHECKING:
    from sentiment_ops.modeling import SentimentModel
    from sentiment_ops.registry import Registry, VersionInfo
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
    own = store is None
    store = store or InferenceStore(settings.store_url, store_text=settings.store.store_text)
    try:
        return feedback_data(
            store, settings, window=req.window, since=req.since, pseudo_label_threshold=req.pseudo_label_threshold
        )
    finally:
        if own:
            store.close()


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
) -> dict[str, dict[str, float]]:
    """``<who>_golden`` and (with a hold-out) ``<who>_new`` metrics of ``model``."""
    from sentiment_ops.lifecycle import evaluate

    scores = {f"{who}_golden": evaluate(model, data.golden, batch_size)[0]}
    if len(data.feedback.holdout):
        scores[f"{who}_new"] = evaluate(model, data.feedback.holdout, batch_size)[0]
    progress("evaluate", *steps)
    return scores


def _run_tags(data: RetrainData, parent: VersionInfo, req: RetrainRequest, triggered_by: Any) -> dict[str, str]:
    from sentiment_ops.provenance import git_commit
    from sentiment_ops.registry import PARENT_TAG

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
    from sentiment_ops import lifecycle
    from sentiment_ops.registry import PARENT_TAG, Registry
    from sentiment_ops.training import fine_tune

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
    scores = _score("production", model, data, bs, progress, (steps // 2, steps))
    with lifecycle.tracked_run(
        registry, f"retrain-from-v{parent.version}", _run_tags(data, parent, req, triggered_by)
    ) as run:
        run.log_params(_run_params(settings, data, parent, req, model))
        seconds = fine_tune(model, data.train, None, req.fit, progress=progress, on_metrics=run.log_metrics)
        scores.update(_score("candidate", model, data, bs, progress, (steps, steps)))
        metrics, decision = _compare(scores, settings)
        metrics["train_seconds"] = seconds
        run.log_metrics(metrics)
        run.log_text(
            json.dumps({"gate": asdict(decision), "data": data.describe()}, indent=2), "retrain/comparison.json"
        )
        info = lifecycle.log_model(registry, run, settings, model, {"data": "feedback", "run_id": run.run_id}, progress)
        lifecycle.attach_reference(settings, registry, run.run_id, model, progress)
    version = registry.register(run.run_id, tags={PARENT_TAG: str(parent.version)}, source=info.model_uri).version
    registry.promote(version, candidate)
    promoted, note = False, ""
    if promote_if_better and decision.passed:
        promoted, note = _promote_if_unchanged(registry, version, parent.version, production)
    result = RetrainResult(
        run_id=run.run_id,
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
