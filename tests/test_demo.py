"""The demo's steps end to end on the tiny model: a real `sentops serve` child process,
real drift checks, labels through POST /feedback, retrain, gate, hot reload."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sentiment_ops.config import load_settings
from sentiment_ops.demo import (
    P_FLOOR,
    DemoOptions,
    DemoReport,
    ServerProcess,
    draw_story,
    ensure_production,
    run_demo,
    story_checks,
    story_figure,
)
from sentiment_ops.store import InferenceStore
from sentiment_ops.tracking.registry import Registry


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
    # 200 held-out tweets: with the 10 unlabeled ones, enough served texts for the retrained
    # version's own reference (jobs.retrain_reference.MIN_SERVED)
    small.update({"labeled": 70, "eval_tweets": 200, "window": 40})
    settings = load_settings(overrides={f"demo.{k}": v for k, v in small.items()})
    opts = DemoOptions(out_dir=tmp_path / "demo")
    events: list[tuple[str, ...]] = []  # phase lines and progress updates, in order
    report = run_demo(
        settings,
        opts,
        lambda stage, msg: events.append(("line", stage, msg)),
        lambda stage, done, total: events.append(("bar", stage, f"{done}/{total}")),
    )
    lines = [(e[1], e[2]) for e in events if e[0] == "line"]
    stages = [stage for stage, _ in lines]

    assert report.trained_new_model and report.production_before == 1
    assert {"model", "serve", "traffic", "drift", "labels", "measure", "retrain", "gate"} <= set(stages)
    # the training and the retraining report their steps to the end, each within its phase
    model_done = events.index(next(e for e in events if e[:2] == ("line", "model") and "took" in e[2]))
    retrain_start, gate = (
        events.index(next(e for e in events if e[1] == "retrain")),
        events.index(next(e for e in events if e[1] == "gate")),
    )
    for phase in (events[:model_done], events[retrain_start:gate]):
        train_bar = [e[2] for e in phase if e[:2] == ("bar", "train")]
        done, total = train_bar[-1].split("/")
        assert len(train_bar) > 1 and done == total != "0"
        assert {"evaluate", "log model"} <= {e[1] for e in phase if e[0] == "bar"}
    # each phase's last line says how long it took
    for stage in ("model", "drift", "measure", "gate"):
        assert any("took" in msg for s, msg in lines if s == stage), (stage, lines)
    # every prediction sent through the API was stored, none lost
    assert report.sent_rows == 40 + 80 + 200 + 200 + 40
    assert report.stored_rows == report.sent_rows
    # the person labelled the tweets the mixed (active) selection chose among those served,
    # and each label landed on its served row
    assert report.labels_posted == 70 and report.labels_from == "mixed"
    assert any("chosen by mixed selection" in msg for s, msg in lines if s == "labels")
    served = InferenceStore(settings.store_url).window(settings.mlflow.model_name, 1, 10_000, source="api")
    assert sum(r.feedback_label is not None for r in served) == 70
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
    # the new version's reference is the tweet traffic v1 served (not the IMDB corpus), so
    # the tweets that keep coming after the reload (served for the first time) read no drift
    assert report.retrain["reference"]["source"] == "served", report.retrain["reference"]
    assert report.drift_after["check_id"] not in (None, report.drift_tweets["check_id"])
    assert report.drift_after["n_rows"] == 40 and report.drift_after["drift"] is False, report.drift_after
    assert [name for name, _ in story_checks(report)] == ["IMDB", "tweets", "after reload"]

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


def _report(promoted: bool) -> DemoReport:
    """A report as ``run_demo`` fills it: a p-value of 0 (below the axis) on the tweets."""
    check = {"mmd2": 0.01, "n_rows": 300}
    report = DemoReport(
        production_before=1,
        production_after=2 if promoted else 1,
        drift_imdb={**check, "drift": False, "p_value": 0.42, "cosine_distance": 0.02, "check_id": "a"},
        drift_tweets={**check, "drift": True, "p_value": 0.0, "cosine_distance": 0.31, "check_id": "b"},
        retrain={"version": 2, "gate_passed": promoted},
        promoted=promoted,
        reload_seconds=1.5 if promoted else None,
        tweets_before={"accuracy": 0.61, "f1": 0.58},
        tweets_after={"accuracy": 0.74, "f1": 0.73} if promoted else {"accuracy": 0.61, "f1": 0.58},
    )
    if promoted:
        report.drift_after = {**check, "drift": True, "p_value": 0.002, "cosine_distance": 0.3, "check_id": "c"}
    return report


def test_story_picture_axes(tmp_path: Path) -> None:
    fig = story_figure(_report(promoted=True), alpha=0.01)
    drift, bars = fig.axes[0], fig.axes[1]
    assert drift.get_yscale() == "log"
    assert drift.get_ylim() == pytest.approx((P_FLOOR, 1.0))
    # checks are integers named by the traffic they saw
    assert list(drift.get_xticks()) == [1, 2, 3]
    assert [t.get_text() for t in drift.get_xticklabels()] == ["IMDB", "tweets", "after reload"]
    # no negative p-values on the axis, and a p-value of 0 sits on its floor, not below it
    p_line = next(line for line in drift.get_lines() if line.get_label() == "drift test p-value")
    assert list(p_line.get_ydata()) == [0.42, P_FLOOR, 0.002]
    alpha = next(line for line in drift.get_lines() if line.get_label() == "alpha 0.01")
    assert list(alpha.get_ydata()) == [0.01, 0.01]
    # the promotion and the reload are marked between the tweet check and the one after
    marks = {line.get_label(): line.get_xdata()[0] for line in drift.get_lines()}
    assert 2 < marks["promoted v2"] < marks["server reloaded (1.5 s)"] < 3
    assert [t.get_text() for t in bars.get_xticklabels()] == ["tweet accuracy", "tweet F1"]
    assert {p.get_height() for p in bars.patches} == {0.61, 0.58, 0.74, 0.73}
    settings = load_settings()
    path = draw_story(settings, _report(promoted=True), tmp_path / "demo.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_story_picture_without_promotion() -> None:
    fig = story_figure(_report(promoted=False), alpha=0.05)
    drift = fig.axes[0]
    assert [t.get_text() for t in drift.get_xticklabels()] == ["IMDB", "tweets"]
    assert drift.get_xlim() == (0.5, 2.5)
    labels = {line.get_label() for line in drift.get_lines()}
    assert "alpha 0.05" in labels and not any(str(label).startswith(("promoted", "server")) for label in labels)


def test_demo_table_shows_the_check_after_the_reload(capsys: pytest.CaptureFixture[str]) -> None:
    from sentiment_ops.cli.demo_cmd import _print_report

    report = _report(promoted=True)
    report.retrain["reference"] = {"source": "served"}
    _print_report(report, "sqlite:///mlflow.db")
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "tweets after reload (v2)" in line)
    assert "drift=True" in row and "p=0.002" in row and "reference: served" in row
