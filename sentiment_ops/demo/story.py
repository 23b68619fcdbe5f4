"""``sentops demo``: the whole loop on bundled data, against a real server.

    train (or reuse) → promote → serve on a free loopback port → IMDB traffic (no drift)
    → tweet traffic (drift) → a simulated person labels part of the tweets (POST /feedback)
    → retrain with replay → gate → promote → the server hot-reloads → tweets measured
    through the API before and after → more tweets, checked for drift by the new version
    (its reference is the tweet traffic it was retrained for) → report + picture.

Each step is a function so tests can drive them on the tiny model. The server is a child
process started here and ended here, by its PID (``server``); the HTTP calls are ``client``'s,
the picture ``figure``'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from sentiment_ops.config import DemoSettings, Settings
from sentiment_ops.data import Split, load_corpus
from sentiment_ops.demo.client import drift_summary, post_labels, score_through_api, send_traffic, wait_for_version
from sentiment_ops.demo.figure import draw_story
from sentiment_ops.demo.report import DemoOptions, DemoReport, StageFn, took
from sentiment_ops.demo.report import quiet as _quiet
from sentiment_ops.demo.server import ServerProcess
from sentiment_ops.errors import SentopsError
from sentiment_ops.jobs.steps import ProgressFn, no_progress

if TYPE_CHECKING:
    from sentiment_ops.tracking.registry import Registry


# -- steps ---------------------------------------------------------------------------------
def demo_train_settings(settings: Settings) -> Settings:
    """The settings the demo trains its production model with: ``train`` overlaid by ``demo``."""
    quick, demo = settings.model_copy(deep=True), settings.demo
    quick.train.max_samples = demo.train_samples
    quick.train.max_length = demo.max_length
    quick.train.eval_samples = demo.eval_samples
    quick.train.val_samples = min(quick.train.val_samples or demo.val_samples, demo.val_samples)
    return quick


def window_settings(settings: Settings, window: int) -> Settings:
    """The settings of one of the demo's drift checks: ``drift.window`` set to ``window``."""
    checked = settings.model_copy(deep=True)
    checked.drift.window = window
    return checked


def ensure_production(
    settings: Settings,
    opts: DemoOptions,
    stage: StageFn = _quiet,
    registry: Registry | None = None,
    progress: ProgressFn = no_progress,
) -> tuple[int, bool]:
    """The production version: reused when there is one (and ``reuse``), else trained now
    (``progress`` follows the training's steps)."""
    from sentiment_ops.jobs.train import train
    from sentiment_ops.tracking.registry import Registry

    registry = registry or Registry(settings)
    alias = settings.serve.alias
    current = registry.alias_version(alias)
    if current is not None and opts.reuse:
        stage("model", f"reusing {settings.mlflow.model_name} v{current} ({alias})")
        return current, False
    stage("model", f"training a quick model on {settings.demo.train_samples} IMDB reviews")
    start = time.monotonic()
    result = train(demo_train_settings(settings), registry=registry, promote=True, progress=progress)
    if result.version is None:
        raise SentopsError("the demo needs a registered model (train.register_model is false)")
    golden = result.metrics["golden_accuracy"]
    stage("model", f"v{result.version} golden accuracy {golden:.3f} → {alias} (took {took(time.monotonic() - start)})")
    return result.version, True


# -- the whole story -----------------------------------------------------------------------
@dataclass
class _Story:
    """What the phases of one demo run share."""

    settings: Settings
    report: DemoReport
    stage: StageFn
    progress: ProgressFn = no_progress
    clock: float = field(default_factory=time.monotonic)
    labels_from: str = "mixed"  # DemoOptions.labels_from
    store: Any = None  # the inference store the server writes (InferenceStore)
    registry: Any = None  # the one Registry of the run (tracking.registry.Registry)

    def lap(self, name: str) -> str:
        """Record the phase ``name`` as ended now; returns "took …" for its last line."""
        now = time.monotonic()
        self.report.seconds[name] = round(now - self.clock, 1)
        self.clock = now
        return f"took {took(self.report.seconds[name])}"


@dataclass
class _Traffic:
    imdb: Split  # sent first: no drift expected
    tweets: Split  # sent next: drift expected; a person labels the first ones
    held_out: Split  # tweets scored through the API before and after
    # tweets that keep coming after the reload, checked for drift by the new version: never
    # served before, so in neither its training data nor its reference (served texts of v1)
    after: Split

    @classmethod
    def load(cls, demo: DemoSettings) -> _Traffic:
        tweets = load_corpus("tweets")
        return cls(
            imdb=load_corpus("imdb").test.sample(demo.imdb_traffic, seed=101),
            tweets=tweets.train.sample(demo.tweet_traffic, seed=102),
            held_out=tweets.test.head(demo.eval_tweets),
            after=tweets.validation.sample(demo.window, seed=103),
        )


def _send_and_check(
    story: _Story, client: httpx.Client, split: Split, what: str, window: int
) -> tuple[Any, list[dict[str, Any]]]:
    """Send ``split`` (``what``: its name) through the API, then run a drift check on the
    served window."""
    from sentiment_ops.drift.check import run_drift_check

    story.stage("traffic", f"{len(split)} {what} → /predict/batch")
    preds = send_traffic(client, split.texts)
    story.report.sent_rows += len(split)
    time.sleep(1.0)  # the store writer flushes in the background
    settings = window_settings(story.settings, window)
    check = run_drift_check(settings, story.registry, alias=settings.serve.alias)
    return check, preds


def _drift_line(traffic: str, check: Any, took_: str) -> str:
    return f"{traffic} traffic: {'DRIFT' if check.drift else 'no drift'} (p = {check.p_value:.3f}; {took_})"


def _drift_and_labels(story: _Story, client: httpx.Client, traffic: _Traffic, token: str) -> str | None:
    """IMDB traffic (no drift), tweet traffic (drift), labels, tweets measured; returns the
    id of the drift check that triggers the retraining."""
    demo, report = story.settings.demo, story.report
    check, _ = _send_and_check(story, client, traffic.imdb, "IMDB reviews", min(demo.window, len(traffic.imdb)))
    report.drift_imdb = drift_summary(check)
    story.stage("drift", _drift_line("IMDB", check, story.lap("imdb traffic + drift")))
    check, preds = _send_and_check(story, client, traffic.tweets, "tweets", demo.window)
    report.drift_tweets = drift_summary(check)
    story.stage("drift", _drift_line("tweet", check, story.lap("tweet traffic + drift")))
    n = min(demo.labeled, len(preds))
    chosen, labels = _choose_labels(story, preds, traffic.tweets.labels, n)
    report.labels_posted, report.labels_from = post_labels(client, chosen, labels, token), story.labels_from
    story.stage(
        "labels",
        f"a person labelled {report.labels_posted} of the {len(preds)} tweets served, chosen by "
        f"{story.labels_from} selection (POST /feedback)",
    )
    report.tweets_before = score_through_api(client, traffic.held_out)
    report.sent_rows += len(traffic.held_out)
    f1, n_out = report.tweets_before["f1"], len(traffic.held_out)
    took_ = story.lap("labels + measure")
    story.stage("measure", f"served v{report.production_before} on {n_out} held-out tweets: F1 {f1:.3f} ({took_})")
    return check.check_id


def _choose_labels(
    story: _Story, preds: list[dict[str, Any]], truth: np.ndarray, n: int
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The ``n`` served tweets the simulated person labels, and their true labels: the first
    ``n`` sent for ``random`` (the corpus is shuffled), else ``labeling``'s choice among the
    tweets just served (the store's window of the production version)."""
    from sentiment_ops.labeling import Strategy
    from sentiment_ops.labeling.queue import Selection, choose_to_label

    strategy = Strategy(story.labels_from)
    if strategy is Strategy.RANDOM or n == 0 or story.store is None:
        return preds[:n], truth[:n]
    selection = Selection(strategy, n, window=len(preds), version=story.report.production_before)
    queue = choose_to_label(story.settings, story.registry, story.store, selection)
    picked = {item.record.id for item in queue.items}
    rows = [(p, label) for p, label in zip(preds, truth.tolist(), strict=True) if p["id"] in picked]
    return [p for p, _ in rows], np.array([label for _, label in rows], dtype=np.int64)


def _retrain(story: _Story, check_id: str | None) -> None:
    """Retrain with replay and gate, promoting when the gate passes."""
    from sentiment_ops.jobs.retrain import CandidateNotPromoted, retrain

    report = story.report
    settings = story.settings.model_copy(deep=True)
    settings.retrain.replay_ratio = settings.demo.replay_ratio  # the demo's replay, validated
    story.stage("retrain", "fine-tuning from production on the labels + IMDB replay")
    try:
        result = retrain(
            settings, story.registry, promote_if_better=True, triggered_by=check_id, progress=story.progress
        )
    except CandidateNotPromoted as exc:  # a refused candidate is part of the story
        result = exc.result
    report.retrain = {
        "version": result.version,
        "gate_passed": result.gate.passed,
        "reasons": list(result.gate.reasons),
        "summary": result.summary(),
        "metrics": result.metrics,
        "reference": result.reference,
    }
    report.promoted = result.promoted
    story.stage("retrain", f"drift reference of v{result.version}: {result.reference['note']}")
    story.stage("gate", f"{result.summary()} ({story.lap('retrain + gate')})")


def _check_after_reload(story: _Story, client: httpx.Client, after: Split) -> None:
    """More tweets through the API, then a drift check of the new version on them (none
    when they are fewer than ``drift.min_rows``): its reference is the tweet traffic it was
    retrained for, so continuing tweets read no drift."""
    from sentiment_ops.drift.check import run_drift_check
    from sentiment_ops.errors import NotEnoughDataError

    story.stage("traffic", f"{len(after)} more tweets → /predict/batch")
    send_traffic(client, after.texts)
    story.report.sent_rows += len(after)
    window = min(story.settings.demo.window, len(after))
    time.sleep(1.0)  # the store writer flushes in the background
    try:
        settings = window_settings(story.settings, window)
        check = run_drift_check(settings, story.registry, alias=settings.serve.alias)
    except NotEnoughDataError as exc:
        story.stage("drift", f"no check after the reload: {exc}")
        return
    story.report.drift_after = drift_summary(check)
    story.stage("drift", _drift_line(f"v{story.report.production_after} tweet", check, story.lap("drift after reload")))


def _reload_and_measure(story: _Story, client: httpx.Client, traffic: _Traffic) -> None:
    """The server reloads the promoted version; tweets measured through the API again."""
    demo, report = story.settings.demo, story.report
    version = report.retrain["version"]
    if report.promoted:
        report.reload_seconds = round(wait_for_version(client, version, demo.reload_timeout_s), 1)
        story.stage("reload", f"the server serves v{version} ({report.reload_seconds:.1f} s after the alias moved)")
    report.production_after = int(client.get("/model").json()["version"])
    report.tweets_after = score_through_api(client, traffic.held_out)
    report.sent_rows += len(traffic.held_out)
    took_ = story.lap("reload + measure")
    story.stage("measure", f"served v{report.production_after}: F1 {report.tweets_after['f1']:.3f} ({took_})")
    if report.promoted:
        _check_after_reload(story, client, traffic.after)


def run_demo(
    settings: Settings, opts: DemoOptions, stage: StageFn = _quiet, progress: ProgressFn = no_progress
) -> DemoReport:
    """The whole story (see the module docstring), with the ``demo`` settings; ``progress``
    follows the training and the retraining step by step."""
    from sentiment_ops.store import open_store
    from sentiment_ops.tracking.registry import Registry

    story = _Story(settings, DemoReport(), stage, progress, registry=Registry(settings))
    report = story.report
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    report.production_before, report.trained_new_model = ensure_production(
        settings, opts, stage, story.registry, progress
    )
    story.lap("model")
    traffic = _Traffic.load(settings.demo)
    store = open_store(settings)
    story.labels_from, story.store = opts.labels_from, store
    try:
        rows_before = store.count(settings.mlflow.model_name, source="api")
        server = ServerProcess(settings, log_path=opts.out_dir / "server.log")
        try:
            stage("serve", f"starting sentops serve on {server.base_url}")
            server.wait_ready(settings.demo.startup_timeout_s)
            report.base_url = server.base_url
            stage("serve", f"ready ({story.lap('serve')})")
            with httpx.Client(base_url=server.base_url, timeout=60) as client:
                check_id = _drift_and_labels(story, client, traffic, server.feedback_token)
                _retrain(story, check_id)
                _reload_and_measure(story, client, traffic)
        finally:
            server.stop()
        report.stored_rows = store.count(settings.mlflow.model_name, source="api") - rows_before
    finally:
        store.close()
    report.picture = str(draw_story(settings, report, opts.out_dir / "demo.png"))
    return report
