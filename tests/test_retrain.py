"""Retraining from feedback labels, the champion/challenger gate, pseudo-label mode.

The tiny model is trained and promoted (version 1); tweets with their true labels are
written straight into the inference store, as the server and a labeling person would."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from sentiment_ops.config import load_settings
from sentiment_ops.data import load_corpus
from sentiment_ops.errors import GateFailedError
from sentiment_ops.gate import gate
from sentiment_ops.jobs.retrain import PSEUDO_TAG, TRIGGER_TAG, CandidateNotPromoted, retrain
from sentiment_ops.store import InferenceStore, PredictionRecord
from sentiment_ops.tracking.registry import PARENT_TAG, Registry

MODEL = "sentiment-classifier"


@pytest.fixture()
def production(cli: Callable[..., Any], trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Registry:
    """Tiny version 1 in production; small retraining settings."""
    for key, value in {"MIN_LABELS": "20", "GOLDEN_SAMPLES": "40", "LEARNING_RATE": "0.001"}.items():
        monkeypatch.setenv(f"SENTOPS_RETRAIN__{key}", value)
    assert cli("promote", "--version", "1").exit_code == 0
    return Registry(load_settings())


def _log_tweets(n: int, labeled: bool, offset: int = 0, confidence: float = 0.95) -> list[PredictionRecord]:
    """``n`` served tweets; with ``labeled`` a person then gives each its true label."""
    tweets = load_corpus("tweets").train
    store = InferenceStore(load_settings().store_url)
    recs = [
        PredictionRecord(
            model_name=MODEL,
            model_version=1,
            text=tweets.texts[offset + i],
            prediction=int(tweets.labels[offset + i]),
            probability=confidence if tweets.labels[offset + i] else 1 - confidence,
            confidence=confidence,
        )
        for i in range(n)
    ]
    store.add_predictions(recs)
    if labeled:
        for rec, label in zip(recs, tweets.labels[offset : offset + n], strict=True):
            assert store.set_feedback(rec.id, int(label))
    store.close()
    return recs


def _json(result: Any) -> Any:
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("cand_f1", "prod_f1", "cand_acc", "prod_acc", "passed", "why"),
    [
        (0.80, 0.70, 0.880, 0.885, True, ""),  # +0.10 F1, -0.005 accuracy
        (0.72, 0.70, 0.880, 0.890, True, ""),  # exactly at δ and ε
        (0.71, 0.70, 0.900, 0.890, False, "F1 gain +0.0100"),  # not enough gain
        (0.90, 0.70, 0.850, 0.890, False, "golden accuracy drop 0.0400"),  # forgets IMDB
        (0.60, 0.70, 0.800, 0.890, False, "F1 gain -0.1000"),  # worse everywhere
        (None, None, 0.890, 0.890, False, "no new-domain hold-out"),
    ],
)
def test_gate_on_numbers(cand_f1, prod_f1, cand_acc, prod_acc, passed: bool, why: str) -> None:  # type: ignore[no-untyped-def]
    decision = gate(
        candidate_new_f1=cand_f1,
        production_new_f1=prod_f1,
        candidate_golden_acc=cand_acc,
        production_golden_acc=prod_acc,
        min_f1_gain=0.02,
        max_acc_drop=0.01,
    )
    assert decision.passed is passed
    assert (not decision.reasons) is passed
    assert why in " ".join(decision.reasons)
    if passed:
        assert decision.f1_gain is not None and decision.f1_gain >= 0.02 - 1e-9


def test_too_few_labels_registers_nothing(cli, production: Registry) -> None:  # type: ignore[no-untyped-def]
    _log_tweets(5, labeled=True)
    _log_tweets(50, labeled=False, offset=100)  # the model's own predictions never count as labels
    result = cli("retrain")
    assert result.exit_code == 4, result.output
    assert "found 5 labeled texts" in result.stderr and "need at least 20" in result.stderr
    assert [v.version for v in production.list_versions()] == [1]
    runs = production.client.search_runs([production.experiment_id()])
    assert len(runs) == 1  # only the training run


def test_retrain_end_to_end_registers_a_candidate(cli, production: Registry) -> None:  # type: ignore[no-untyped-def]
    _log_tweets(70, labeled=True)
    result = cli("retrain", "--window", "60", "--triggered-by", "7", "--json")
    assert result.exit_code == 0, result.output
    out = _json(result)
    assert out["version"] == 2 and out["parent_version"] == 1 and not out["promoted"]
    data = out["data"]
    assert data["labels_real"] == 60  # the window
    assert data["labels_train"] + data["labels_holdout"] == 60 and data["labels_holdout"] == 18
    assert data["replay_size"] == data["labels_train"] and data["replay_data"] == "imdb"
    assert data["train_size"] == 2 * data["labels_train"]
    for who in ("candidate", "production"):
        for what in ("golden_accuracy", "golden_f1", "new_accuracy", "new_f1"):
            assert 0.0 <= out["metrics"][f"{who}_{what}"] <= 1.0

    assert production.alias_version("candidate") == 2
    assert production.alias_version("production") == 1
    info = production.get_version(2)
    assert info.parent_version == 1 and info.tags[PARENT_TAG] == "1"
    assert info.tags[TRIGGER_TAG] == "7" and info.tags[PSEUDO_TAG] == "false"
    assert info.tags["sentops.kind"] == "retrain" and info.tags["sentops.labels_real"] == "60"
    run = production.client.get_run(out["run_id"])
    assert run.data.metrics["candidate_new_f1"] == pytest.approx(out["metrics"]["candidate_new_f1"])
    for key in ("feedback_hash", "holdout_hash", "replay_hash", "golden_hash"):
        assert len(run.data.tags[f"sentops.{key}"]) == 16
        assert key not in run.data.params  # the data summary is logged once, as tags
    artifacts = {a.path for a in production.client.list_artifacts(out["run_id"])}
    assert {"config", "reference", "retrain"} <= artifacts
    # 60 served texts are too few to stand for the traffic: the corpus reference stays
    assert out["reference"]["source"] == "corpus" and out["reference"]["served_texts"] == 60
    assert "reference from imdb instead" in out["reference"]["note"]
    assert run.data.tags["sentops.reference_source"] == "corpus"
    assert production.get_version(2).golden_accuracy == pytest.approx(out["metrics"]["candidate_golden_accuracy"])

    table = cli("models", "--json")
    assert {m["version"]: m["aliases"] for m in _json(table)} == {2: ["candidate"], 1: ["production"]}


def test_starts_from_production_weights_and_gate_refuses_no_gain(cli, production: Registry, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A learning rate of ~0 leaves the weights where they started: the candidate must then
    # score exactly like production (a fresh base model would not), so F1 gains nothing
    # and the gate must refuse to promote.
    monkeypatch.setenv("SENTOPS_RETRAIN__LEARNING_RATE", "1e-12")
    _log_tweets(40, labeled=True)
    result = cli("retrain", "--promote-if-better", "--json")
    assert result.exit_code == 5, result.output
    out = _json(result)
    m = out["metrics"]
    assert m["candidate_golden_accuracy"] == pytest.approx(m["production_golden_accuracy"])
    assert m["candidate_new_f1"] == pytest.approx(m["production_new_f1"])
    assert not out["gate"]["passed"] and "F1 gain" in out["gate"]["reasons"][0]
    assert "sentops promote --version 2" in out["summary"]
    assert "not promoted" in result.stderr
    assert production.alias_version("production") == 1
    assert production.alias_version("candidate") == 2


def test_gate_never_promotes_a_failing_candidate(cli, production: Registry, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SENTOPS_RETRAIN__MIN_F1_GAIN", "5")  # no candidate can gain 5 F1 points
    _log_tweets(40, labeled=True)
    result = cli("retrain", "--promote-if-better")
    assert result.exit_code == 5, result.output
    assert "gate failed" in result.stdout and "sentops promote --version 2" in result.stdout
    assert "production v1" in result.stdout  # the comparison table
    assert production.alias_version("production") == 1
    assert [e.to_version for e in production.history("production")] == [1]

    # Not asked to promote: the same failing gate is a normal outcome (exit 0).
    result = cli("retrain")
    assert result.exit_code == 0, result.output
    assert production.alias_version("production") == 1 and production.alias_version("candidate") == 3


def test_core_retrain_raises_with_its_result_when_not_promoted(production: Registry, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The library raises (GateFailedError, exit 5) when promotion was asked for and not
    done; the error carries the full result, so callers still see the comparison. The
    registry and the store are passed in."""
    monkeypatch.setenv("SENTOPS_RETRAIN__MIN_F1_GAIN", "5")
    _log_tweets(40, labeled=True)
    settings = load_settings()
    store = InferenceStore(settings.store_url)
    try:
        with pytest.raises(CandidateNotPromoted) as failed:
            retrain(settings, registry=production, store=store, promote_if_better=True)
    finally:
        store.close()
    assert isinstance(failed.value, GateFailedError) and failed.value.exit_code == 5
    result = failed.value.result
    assert result.version == 2 and not result.promoted and not result.gate.passed
    assert "candidate version 2 was not promoted" in str(failed.value) and "F1 gain" in str(failed.value)
    assert production.alias_version("candidate") == 2 and production.alias_version("production") == 1


def test_promote_if_better_moves_production(cli, production: Registry, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SENTOPS_RETRAIN__MIN_F1_GAIN", "-5")  # any candidate passes
    monkeypatch.setenv("SENTOPS_RETRAIN__MAX_ACC_DROP", "5")
    _log_tweets(40, labeled=True)
    result = cli("retrain", "--promote-if-better", "--json")
    assert result.exit_code == 0, result.output
    out = _json(result)
    assert out["promoted"] and out["gate"]["passed"]
    assert production.alias_version("production") == 2
    assert [(e.from_version, e.to_version) for e in production.history("production")] == [(None, 1), (1, 2)]


def test_pseudo_labels_are_opt_in_and_tagged(cli, production: Registry) -> None:  # type: ignore[no-untyped-def]
    _log_tweets(30, labeled=False, confidence=0.95)
    _log_tweets(30, labeled=False, offset=200, confidence=0.6)  # below the threshold
    assert cli("retrain").exit_code == 4  # no real labels, and predictions are not labels

    result = cli("retrain", "--pseudo-label-threshold", "0.9", "--json")
    assert result.exit_code == 0, result.output
    out = _json(result)
    assert out["pseudo_labels"] and out["data"]["labels_pseudo"] == 30 and out["data"]["labels_real"] == 0
    assert out["data"]["labels_holdout"] == 0
    assert not out["gate"]["passed"] and "no new-domain hold-out" in out["gate"]["reasons"][0]
    info = production.get_version(out["version"])
    assert info.tags[PSEUDO_TAG] == "true" and info.tags["sentops.labels_pseudo"] == "30"

    bad = cli("retrain", "--pseudo-label-threshold", "0.3")
    assert bad.exit_code == 2 and "threshold" in bad.stderr


def test_usage_errors(cli, tiny_env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SENTOPS_RETRAIN__MIN_LABELS", "20")
    both = cli("retrain", "--window", "5", "--since", "2026-01-01")
    assert both.exit_code == 2
    _log_tweets(30, labeled=True)
    no_prod = cli("retrain")
    assert no_prod.exit_code == 66 and "production" in no_prod.stderr
