"""The scores ``sentops retrain`` compares: production's and the candidate's on the hold-outs
(the golden IMDB one when production's classes include negative and positive, and the
new-domain one), and the gate's reading of them.

A version's scores on a hold-out never change, so they are computed once per version and
hold-out and kept as a tag of the model version, ``sentops.scores.<hold-out hash>`` (the
metrics as JSON): the next retrain from the same production reads them instead of scoring
it again. The candidate's own scores are kept the same way for when it becomes production,
and ``sentops train`` keeps a new version's golden scores. A tag of the version, not a file
in the home: it lives with the registry, so every machine and job that retrains from it
reuses it, and it goes when the version goes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sentiment_ops.config import Settings
from sentiment_ops.gate import GateDecision, describe, gate
from sentiment_ops.jobs import steps
from sentiment_ops.jobs.retrain_data import RetrainData
from sentiment_ops.labels import LabelSet

if TYPE_CHECKING:
    from sentiment_ops.data import Split
    from sentiment_ops.modeling import Prediction, SentimentModel
    from sentiment_ops.tracking.registry import Registry, VersionInfo

SCORES_TAG = "sentops.scores."  # + the hold-out's hash: a version's metrics on it (JSON)

Scores = dict[str, dict[str, float]]


def holdouts(data: RetrainData) -> dict[str, Split]:
    """The hold-outs both models are scored on, by name: ``golden`` (when the classes have
    it) and ``new`` (when the feedback left one)."""
    out = {} if data.golden is None else {"golden": data.golden}
    if len(data.feedback.holdout):
        out["new"] = data.feedback.holdout
    return out


def score(who: str, model: SentimentModel, data: RetrainData, batch_size: int) -> tuple[Scores, dict[str, Prediction]]:
    """``<who>_<hold-out>`` metrics of ``model`` and its predictions on each hold-out."""
    scores, preds = {}, {}
    for name, split in holdouts(data).items():
        scores[f"{who}_{name}"], preds[name] = steps.evaluate(model, split, batch_size)
    return scores, preds


def production_scores(
    registry: Registry, parent: VersionInfo, model: SentimentModel, data: RetrainData, batch_size: int
) -> tuple[Scores, list[str]]:
    """``production_<hold-out>`` metrics of ``parent`` (``model``): read from its tags where
    kept, else computed and kept; and the names of the hold-outs whose scores were reused."""
    scores, reused = {}, []
    for name, split in holdouts(data).items():
        kept = parent.tags.get(SCORES_TAG + split.hash)
        if kept is not None:
            scores[f"production_{name}"] = {k: float(v) for k, v in json.loads(kept).items()}
            reused.append(name)
            continue
        scores[f"production_{name}"] = steps.evaluate(model, split, batch_size)[0]
        keep_score(registry, parent.version, split, scores[f"production_{name}"])
    return scores, reused


def keep_score(registry: Registry, version: int, split: Split, metrics: dict[str, float]) -> None:
    """Keep ``version``'s ``metrics`` on the hold-out ``split`` as a tag of the version."""
    registry.set_version_tag(version, SCORES_TAG + split.hash, json.dumps(metrics))


def keep_scores(registry: Registry, version: int, data: RetrainData, scores: Scores, who: str) -> None:
    """Keep ``who``'s scores as tags of ``version`` (read by ``production_scores``)."""
    for name, split in holdouts(data).items():
        if f"{who}_{name}" in scores:
            keep_score(registry, version, split, scores[f"{who}_{name}"])


def f1_key(classes: LabelSet) -> tuple[str, str]:
    """The metric the gate compares and its name: the positive class's F1 of a binary model
    (as always), macro-F1 of a model with more classes."""
    return ("f1", "F1") if classes.k == 2 else ("macro_f1", "macro-F1")


def compare(scores: Scores, settings: Settings, classes: LabelSet) -> tuple[dict[str, float], GateDecision]:
    """The run's metrics (both models', and the gate's numbers) and the gate's decision."""
    metrics = {f"{k}_{m}": v for k, vals in scores.items() for m, v in vals.items()}
    key, name = f1_key(classes)
    decision = gate(
        candidate_new_f1=metrics.get(f"candidate_new_{key}"),
        production_new_f1=metrics.get(f"production_new_{key}"),
        candidate_golden_acc=metrics.get("candidate_golden_accuracy"),
        production_golden_acc=metrics.get("production_golden_accuracy"),
        min_f1_gain=settings.retrain.min_f1_gain,
        max_acc_drop=settings.retrain.max_acc_drop,
        f1_name=name,
    )
    if "candidate_golden_accuracy" in metrics:  # what `sentops models` lists
        metrics["golden_accuracy"] = metrics["candidate_golden_accuracy"]
        metrics["golden_f1"] = metrics["candidate_golden_f1"]
    if decision.golden_acc_drop is not None:
        metrics["golden_acc_drop"] = decision.golden_acc_drop
    if decision.f1_gain is not None:
        metrics["new_f1_gain"] = decision.f1_gain
    metrics["gate_passed"] = float(decision.passed)
    return metrics, decision


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
    ]
    if data.golden is not None:
        lines.append(
            f"Golden IMDB hold-out ({len(data.golden)} rows): accuracy {metrics['candidate_golden_accuracy']:.4f} "
            f"(production {metrics['production_golden_accuracy']:.4f}), F1 {metrics['candidate_golden_f1']:.4f} "
            f"(production {metrics['production_golden_f1']:.4f})."
        )
    key, name = f1_key(data.train.classes)
    if f"candidate_new_{key}" in metrics:
        lines.append(
            f"New-domain hold-out ({len(fb.holdout)} labels): accuracy {metrics['candidate_new_accuracy']:.4f} "
            f"(production {metrics['production_new_accuracy']:.4f}), {name} {metrics[f'candidate_new_{key}']:.4f} "
            f"(production {metrics[f'production_new_{key}']:.4f})."
        )
    gate_line = describe(decision)
    lines += ["", f"{gate_line[:1].upper()}{gate_line[1:]}."]
    return "\n".join(lines)
