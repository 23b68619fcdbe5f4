"""Retraining from real feedback labels, with replay, and the champion/challenger gate.

``retrain`` (``sentops retrain``):

1. reads the labeled rows of the inference store (feedback labels; never the model's own
   predictions, unless ``pseudo_label_threshold`` is given), one row per distinct text, as
   classes of the *production* version (a label it does not have is refused:
   ``UnknownClassError``; new classes need a new model, ``sentops train``);
2. splits them, stratified and seeded, into training rows and a new-domain hold-out, and
   mixes a replay sample of production's training data (with its classes) into the rows;
3. fine-tunes starting from production's weights: the candidate keeps its classes;
4. scores production and candidate on the golden IMDB hold-out (when the classes include
   negative and positive) and the new-domain hold-out (production's scores are computed
   once per version and hold-out: ``retrain_scores``), logs one MLflow run (both models'
   metrics, lineage tags, the model, reference embeddings of the served texts it was
   retrained for: ``retrain_reference``), registers the new version and points
   ``retrain.candidate_alias`` at it;
5. applies the gate (new-domain F1 gain ≥ δ, macro-F1 for more than two classes; golden
   accuracy drop ≤ ε) and, only when asked and when it passes, moves production
   (``serve.alias``). A failing gate never promotes; when promotion was asked for and not
   done, ``CandidateNotPromoted`` (a ``GateFailedError``) carries the result.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sentiment_ops.config import Settings
from sentiment_ops.errors import GateFailedError, NotFoundError
from sentiment_ops.gate import GateDecision
from sentiment_ops.jobs import steps
from sentiment_ops.jobs.recipe import FineTunePlan, run_plan
from sentiment_ops.jobs.retrain_data import RetrainData, RetrainRequest, logged_splits, read_feedback, with_replay
from sentiment_ops.jobs.retrain_reference import SOURCE_TAG, ReferenceChoice, served_reference
from sentiment_ops.jobs.retrain_scores import Scores, compare, keep_scores, production_scores, score
from sentiment_ops.jobs.retrain_scores import version_description as describe_version
from sentiment_ops.jobs.steps import ProgressFn, no_progress
from sentiment_ops.store import InferenceStore, using_store

if TYPE_CHECKING:
    from sentiment_ops.modeling import Prediction, SentimentModel
    from sentiment_ops.tracking.registry import Registry, VersionInfo
    from sentiment_ops.tracking.runs import TrackedRun

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
    reference: dict[str, Any] = field(default_factory=dict)  # where the drift reference came from
    production_scores_reused: list[str] = field(default_factory=list)  # hold-outs production was not rescored on

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


def _production(registry: Registry, alias: str) -> VersionInfo:
    version = registry.alias_version(alias)
    if version is None:
        raise NotFoundError(f"no {alias} version to retrain from: run `sentops promote --version N` first")
    return registry.get_version(version)


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


def _run_params(settings: Settings, parent: VersionInfo, req: RetrainRequest, model: SentimentModel) -> dict[str, str]:
    """The run's options. The data's sizes and hashes are tags (``_run_tags``): the
    version copies them."""
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
        }
    )


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


class _Candidate:
    """The evaluation of a retrain plan: scores the fine-tuned model on both hold-outs,
    compares it with production's ``scores`` (the gate, kept in ``decision``) and logs the
    comparison and the plots."""

    def __init__(
        self,
        settings: Settings,
        data: RetrainData,
        parent: VersionInfo,
        scores: Scores,
        progress: ProgressFn,
    ) -> None:
        self.settings, self.data, self.parent, self.scores, self.progress = settings, data, parent, scores, progress
        self.decision: GateDecision | None = None
        self.own: Scores = {}  # the candidate's scores (kept with its version: retrain_scores)

    def evaluate(self, model: SentimentModel, run: TrackedRun, seconds: float) -> dict[str, float]:
        data = self.data
        self.own, after = score("candidate", model, data, self.settings.train.eval_batch_size)
        self.progress("evaluate", 2, 2)
        scores = {**self.scores, **self.own}
        metrics, self.decision = compare(scores, self.settings, data.train.classes)
        metrics["train_seconds"] = seconds
        comparison = {"gate": asdict(self.decision), "data": data.describe()}
        run.log_text(json.dumps(comparison, indent=2), "retrain/comparison.json")
        _log_plots(run, data, scores, after, self.parent.version)
        return metrics

    def describe(self, metrics: dict[str, float]) -> str:
        assert self.decision is not None  # evaluate ran
        return describe_version(self.data, self.parent, metrics, self.decision)


def _log_plots(run: TrackedRun, data: RetrainData, scores: Scores, after: dict[str, Prediction], parent: int) -> None:
    """The candidate's confusion matrix, ROC and PR curves, as a train run logs them
    (``plots/``: on the new-domain hold-out, or the golden one without it; ``plots/golden/``),
    and the before/after comparison of production and candidate (``plots/before_after.png``)."""
    import tempfile
    from pathlib import Path

    from sentiment_ops.evaluation import save_comparison_plot

    if "new" in after:
        steps.log_evaluation(run, data.feedback.holdout, after["new"], "new-domain hold-out")
    if data.golden is not None:
        steps.log_evaluation(
            run, data.golden, after["golden"], "golden IMDB", subdir="golden" if "new" in after else None
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = save_comparison_plot(
            scores, Path(tmp) / "before_after.png", (f"production (v{parent})", "candidate (retrained)")
        )
        run.log_artifacts(path.parent, "plots")


def retrain_plan(
    settings: Settings,
    data: RetrainData,
    parent: VersionInfo,
    req: RetrainRequest,
    model: SentimentModel,
    candidate: _Candidate,
    triggered_by: int | str | None,
    reference: ReferenceChoice,
) -> FineTunePlan:
    """The run of ``sentops retrain``: production's weights (``model``) fine-tuned on the
    feedback rows + replay, scored and gated by ``candidate``, with ``reference``'s texts as
    its drift reference."""
    from sentiment_ops.tracking.registry import PARENT_TAG

    return FineTunePlan(
        run_name=f"retrain-from-v{parent.version}",
        tags={**_run_tags(data, parent, req, triggered_by), SOURCE_TAG: reference.source},
        params=_run_params(settings, parent, req, model),
        datasets={**logged_splits(data), "train": None},  # train_seconds: on no one split
        model=model,
        train=data.train,
        val=None,
        fit=req.fit,
        evaluate=candidate.evaluate,
        describe=candidate.describe,
        model_meta={"data": "feedback"},
        version_tags={PARENT_TAG: str(parent.version)},
        reference=reference.plan,
    )


def _gather(
    settings: Settings, registry: Registry, store: InferenceStore | None, req: RetrainRequest
) -> tuple[VersionInfo, RetrainData, ReferenceChoice]:
    """Production's version, the data to train and score on (as production's classes), and
    the candidate's reference."""
    fb = read_feedback(settings, store, req)
    parent = _production(registry, settings.serve.alias)
    data = with_replay(settings, fb, parent, req, registry.version_classes(parent.version))
    with using_store(settings, store) as opened:
        return parent, data, served_reference(settings, opened, data, parent.version, req.since)


def retrain(
    settings: Settings,
    registry: Registry | None = None,
    store: InferenceStore | None = None,
    *,
    since: datetime | None = None,
    promote_if_better: bool = False,
    triggered_by: int | str | None = None,
    progress: ProgressFn = no_progress,
) -> RetrainResult:
    """``sentops retrain``: see the module docstring; what it reads and trains with is the
    ``retrain`` settings (``since`` replaces ``retrain.window``). ``registry`` and ``store``
    default to the ones the settings name. Raises NotEnoughDataError (too few labels, nothing
    registered), NotFoundError (no production version) and, with ``promote_if_better``,
    CandidateNotPromoted when the candidate was registered but not promoted."""
    from sentiment_ops.tracking.registry import Registry

    req = RetrainRequest.from_settings(settings, since)
    production, candidate_alias = settings.serve.alias, settings.retrain.candidate_alias
    progress("data", 0, 1)
    registry = registry or Registry(settings)
    parent, data, reference = _gather(settings, registry, store, req)
    progress("data", 1, 1)
    progress("load model", 0, 1)
    model = registry.load_model(parent.version)
    progress("load model", 1, 1)
    progress("evaluate", 0, 2)
    scores, reused = production_scores(registry, parent, model, data, settings.train.eval_batch_size)
    progress("evaluate", 1, 2)
    candidate = _Candidate(settings, data, parent, scores, progress)
    plan = retrain_plan(settings, data, parent, req, model, candidate, triggered_by, reference)
    done = run_plan(plan, settings, registry, progress)
    assert done.version is not None and candidate.decision is not None  # a retrain plan registers
    keep_scores(registry, done.version, data, candidate.own, "candidate")
    registry.promote(done.version, candidate_alias)
    promoted, note = False, ""
    if promote_if_better and candidate.decision.passed:
        promoted, note = _promote_if_unchanged(registry, done.version, parent.version, production)
    result = RetrainResult(
        run_id=done.run_id,
        version=done.version,
        parent_version=parent.version,
        model_uri=registry.model_uri(done.version),
        promoted=promoted,
        promote_requested=promote_if_better,
        gate=candidate.decision,
        metrics=done.metrics,
        data=data.describe(),
        pseudo_labels=req.pseudo_label_threshold is not None,
        triggered_by=None if triggered_by is None else str(triggered_by),
        train_seconds=done.seconds,
        production_alias=production,
        candidate_alias=candidate_alias,
        note=note,
        reference=reference.to_dict(),
        production_scores_reused=reused,
    )
    if promote_if_better and not promoted:
        raise CandidateNotPromoted(result)
    return result
