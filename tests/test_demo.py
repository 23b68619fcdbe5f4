"""The demo's steps end to end on the tiny model: a real `sentops serve` child process,
real drift checks, labels through POST /feedback, retrain, gate, hot reload."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sentiment_ops.config import load_settings
from sentiment_ops.demo import DemoOptions, ServerProcess, ensure_production, run_demo
from sentiment_ops.registry import Registry


@pytest.fixture()
def demo_env(tiny_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "SENTOPS_DRIFT__MIN_ROWS": "20",
        "SENTOPS_DRIFT__PERMUTATIONS": "200",
        "SENTOPS_RETRAIN__MIN_LABELS": "20",
        "SENTOPS_RETRAIN__GOLDEN_SAMPLES": "100",
        "SENTOPS_SERVE__BACKEND": "torch",
        # A gate the tiny model always passes (an F1 gain of at least -1 and a golden drop of
        # at most 1 hold for any scores), so that promotion and the hot reload always run;
        # whether a real model deserves promotion is test_retrain's business.
        "SENTOPS_RETRAIN__MIN_F1_GAIN": "-1",
        "SENTOPS_RETRAIN__MAX_ACC_DROP": "1",
    }.items():
        monkeypatch.setenv(key, value)


def test_demo_runs_the_whole_loop(demo_env: None, tmp_path: Path) -> None:
    small = {"train_samples": 48, "max_length": 64, "eval_samples": 40, "imdb_traffic": 40, "tweet_traffic": 80}
    small.update({"labeled": 70, "eval_tweets": 30, "window": 40})
    settings = load_settings(overrides={f"demo.{k}": v for k, v in small.items()})
    opts = DemoOptions(out_dir=tmp_path / "demo")
    stages: list[str] = []
    report = run_demo(settings, opts, lambda stage, msg: stages.append(stage))

    assert report.trained_new_model and report.production_before == 1
    assert {"model", "serve", "traffic", "drift", "labels", "measure", "retrain", "gate"} <= set(stages)
    # every prediction sent through the API was stored, none lost
    assert report.sent_rows == 40 + 80 + 30 + 30
    assert report.stored_rows == report.sent_rows
    assert report.labels_posted == 70
    # tweets after IMDB traffic are a real shift, even for a random tiny encoder
    assert report.drift_tweets["drift"] is True
    assert report.drift_imdb["check_id"] is not None and report.drift_tweets["check_id"] is not None
    # retraining registered a candidate from real labels, the (lenient) gate passed, production
    # moved to it, and the running server hot-reloaded it and served the tweets with it
    registry = Registry(settings)
    candidate = report.retrain["version"]
    assert registry.version_for_alias("candidate").version == candidate
    assert candidate != report.production_before
    assert report.retrain["gate_passed"] and report.promoted, report.retrain
    assert {"reload"} <= set(stages)
    assert report.production_after == candidate != report.production_before
    assert report.reload_seconds is not None and report.reload_seconds >= 0
    assert report.tweets_before["version"] == report.production_before
    assert report.tweets_after["version"] == candidate
    assert registry.alias_version("production") == candidate
    assert set(report.tweets_before) == {"accuracy", "f1", "version"}
    assert Path(report.picture or "").stat().st_size > 10_000

    # a second run reuses production instead of training again
    version, trained = ensure_production(settings, opts)
    assert (version, trained) == (report.production_after, False)


def test_demo_server_serves_with_the_settings_it_was_given(
    cli: Callable[..., Any], trained: dict[str, Any], tmp_path: Path
) -> None:
    """``sentops --config x.yaml demo``: the server the demo starts follows the alias (and
    uses the backend) of the YAML file, not the built-in defaults."""
    assert cli("promote", "--version", "1", "--alias", "staging").exit_code == 0
    config = tmp_path / "x.yaml"
    config.write_text("serve:\n  alias: staging\n  backend: torch\n")
    settings = load_settings(config)
    server = ServerProcess(settings, log_path=tmp_path / "server.log")
    try:
        model = server.wait_ready(180)
        assert model["alias"] == "staging" and model["version"] == 1
        assert httpx.post(f"{server.base_url}/predict", json={"text": "fine"}, timeout=30).status_code == 200
    finally:
        server.stop()
