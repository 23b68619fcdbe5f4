"""``sentops demo``: the whole loop on bundled data, against a real server.

    train (or reuse) → promote → serve on a free loopback port → IMDB traffic (no drift)
    → tweet traffic (drift) → a simulated person labels part of the tweets (POST /feedback)
    → retrain with replay → gate → promote → the server hot-reloads → tweets measured
    through the API before and after → report + picture.

Each step is a function so tests can drive them on the tiny model. The server is a child
process started here and ended here, by its PID.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import yaml

from sentiment_ops.config import DemoSettings, Settings
from sentiment_ops.data import Split, load_corpus
from sentiment_ops.errors import SentopsError
from sentiment_ops.evaluation import classification_metrics
from sentiment_ops.lifecycle import ProgressFn, no_progress

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sentiment_ops.tracking.registry import Registry

StageFn = Callable[[str, str], None]  # (stage, message)


def _quiet(stage: str, message: str) -> None:
    return None


@dataclass
class DemoOptions:
    """How this run goes; what it trains and sends is the ``demo`` settings section."""

    reuse: bool = True  # reuse the production model when there is one
    out_dir: Path = field(default_factory=lambda: Path("sentops-demo"))
    # which served tweets the simulated person labels: a labeling.Strategy; "random" labels the
    # first ones sent (the tweets are shuffled), as the demo did before active selection
    labels_from: str = "mixed"


@dataclass
class DemoReport:
    base_url: str = ""
    production_before: int | None = None
    production_after: int | None = None
    trained_new_model: bool = False
    drift_imdb: dict[str, Any] = field(default_factory=dict)
    drift_tweets: dict[str, Any] = field(default_factory=dict)
    drift_after: dict[str, Any] = field(default_factory=dict)  # the new version on tweets, after the reload
    labels_posted: int = 0
    labels_from: str = ""  # the strategy that chose them
    retrain: dict[str, Any] = field(default_factory=dict)
    promoted: bool = False
    reload_seconds: float | None = None
    tweets_before: dict[str, float] = field(default_factory=dict)
    tweets_after: dict[str, float] = field(default_factory=dict)
    stored_rows: int = 0
    sent_rows: int = 0
    picture: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- steps ---------------------------------------------------------------------------------
def demo_train_settings(settings: Settings) -> Settings:
    """The settings the demo trains its production model with: ``train`` overlaid by ``demo``."""
    quick, demo = settings.model_copy(deep=True), settings.demo
    quick.train.max_samples = demo.train_samples
    quick.train.max_length = demo.max_length
    quick.train.eval_samples = demo.eval_samples
    quick.train.val_samples = min(quick.train.val_samples or demo.val_samples, demo.val_samples)
    return quick


def took(seconds: float) -> str:
    """A duration as a phase line shows it: ``42 s``, ``7 min 05 s``."""
    whole = round(seconds)
    return f"{seconds:.1f} s" if seconds < 60 else f"{whole // 60} min {whole % 60:02d} s"


def ensure_production(
    settings: Settings,
    opts: DemoOptions,
    stage: StageFn = _quiet,
    registry: Registry | None = None,
    progress: ProgressFn = no_progress,
) -> tuple[int, bool]:
    """The production version: reused when there is one (and ``reuse``), else trained now
    (``progress`` follows the training's steps)."""
    from sentiment_ops.tracking.registry import Registry
    from sentiment_ops.training import train

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``sentops serve`` as a child process on 127.0.0.1, serving with ``settings`` (written
    to a private YAML file that the child reads as its ``SENTOPS_CONFIG``); stopped by its PID."""

    def __init__(self, settings: Settings, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._config_dir = tempfile.TemporaryDirectory(prefix="sentops-demo-")  # 0700: URIs may hold passwords
        config_file = Path(self._config_dir.name) / "settings.yaml"
        config_file.write_text(yaml.safe_dump(settings.to_dict(), sort_keys=False))
        env = dict(os.environ)
        env["SENTOPS_CONFIG"] = str(config_file)
        env["SENTOPS_HOME"] = str(settings.home)
        env.setdefault("SENTOPS_SERVE__POLL_INTERVAL_S", "1")
        # Label writes need a token: a fresh random one for this server only.
        self.feedback_token = secrets.token_urlsafe(32)
        env["SENTOPS_FEEDBACK_TOKEN"] = self.feedback_token
        self.log_path = log_path
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sentiment_ops.cli.main", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SentopsError(f"the demo server exited with code {self.proc.returncode} (log: {self.log_path})")
            try:
                resp = httpx.get(f"{self.base_url}/ready", timeout=2)
                if resp.status_code == 200:
                    return dict(httpx.get(f"{self.base_url}/model", timeout=5).json())
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SentopsError(f"the demo server was not ready within {timeout_s:.0f} s (log: {self.log_path})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: the store writer drains
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not isinstance(self._log, int):  # an open log file, not subprocess.DEVNULL
            self._log.close()
        self._config_dir.cleanup()


def send_traffic(client: httpx.Client, texts: list[str], batch: int = 16) -> list[dict[str, Any]]:
    """Send texts the way clients do (POST /predict/batch in small batches); return predictions."""
    out: list[dict[str, Any]] = []
    for start in range(0, len(texts), batch):
        resp = client.post("/predict/batch", json={"texts": texts[start : start + batch]})
        resp.raise_for_status()
        out.extend(resp.json()["predictions"])
    return out


def post_labels(client: httpx.Client, predictions: list[dict[str, Any]], labels: np.ndarray, token: str) -> int:
    """A simulated person: the corpus's true label for each logged prediction id (with the
    server's label-writer token)."""
    auth = {"Authorization": f"Bearer {token}"}
    for pred, label in zip(predictions, labels.tolist(), strict=True):
        client.post("/feedback", json={"id": pred["id"], "label": int(label)}, headers=auth).raise_for_status()
    return len(predictions)


def score_through_api(client: httpx.Client, split: Split) -> dict[str, float]:
    preds = send_traffic(client, split.texts, batch=32)
    probs = np.array([p["probability"] for p in preds])
    m = classification_metrics(split.labels, probs)
    return {"accuracy": m["accuracy"], "f1": m["f1"], "version": float(preds[0]["model"]["version"])}


def wait_for_version(client: httpx.Client, version: int, timeout_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        info = client.get("/model").json()
        if info.get("version") == version:
            return time.monotonic() - start
        time.sleep(0.5)
    raise SentopsError(f"the server did not load version {version} within {timeout_s:.0f} s")


def drift_summary(report: Any) -> dict[str, Any]:
    return {
        "drift": report.drift,
        "p_value": report.p_value,
        "mmd2": report.mmd2,
        "cosine_distance": report.cosine_distance,
        "cosine_drift": report.cosine_drift,
        "n_rows": report.n_rows,
        "check_id": report.check_id,
    }


P_FLOOR = 1e-3  # the p-value axis starts here; smaller p-values are drawn on it


def story_checks(report: DemoReport) -> list[tuple[str, dict[str, Any]]]:
    """The drift checks of this run, in order, each named by the traffic it saw."""
    named = [("IMDB", report.drift_imdb), ("tweets", report.drift_tweets), ("after reload", report.drift_after)]
    return [(name, check) for name, check in named if check]


def story_figure(report: DemoReport, alpha: float) -> Figure:
    """The picture of one demo run: left, the p-value of each drift check on a log axis
    (``P_FLOOR`` to 1) with the ``alpha`` line, the cosine distance on a second axis, and
    where the promotion and the reload happened; right, tweet accuracy / F1 before vs after."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    checks = story_checks(report)
    xs = list(range(1, len(checks) + 1))
    legend_on = ax1
    if checks:
        p_values = [max(float(c["p_value"]), P_FLOOR) for _, c in checks]
        ax1.plot(xs, p_values, "o-", color="C0", label="drift test p-value", clip_on=False)
        for x, p, (_, c) in zip(xs, p_values, checks, strict=True):
            ax1.annotate("drift" if c["drift"] else "ok", (x, p), textcoords="offset points", xytext=(5, 5))
        cosine = ax1.twinx()
        cosine.plot(xs, [c["cosine_distance"] for _, c in checks], "s--", color="C2", label="cosine distance")
        cosine.set_ylabel("cosine distance to the reference", color="C2")
        cosine.set_ylim(bottom=0)
        legend_on = cosine  # drawn last, so the legend is not hidden under its line
    ax1.axhline(alpha, color="red", lw=0.8, label=f"alpha {alpha}")
    _mark_promotion(ax1, report, len(checks))
    ax1.set_yscale("log")
    ax1.set_ylim(P_FLOOR, 1.0)
    ax1.set_ylabel("p-value (log scale)")
    ax1.set_xticks(xs, [name for name, _ in checks])
    ax1.set_xlim(0.5, max(len(checks), 1) + 0.5)
    ax1.set_xlabel("drift check, by the traffic it saw")
    handles = [h for ax in fig.axes if ax is not ax2 for h in ax.get_legend_handles_labels()[0]]
    legend_on.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    ax1.set_title("Drift checks over the demo")
    _before_after_bars(ax2, report)
    fig.tight_layout()
    return fig


def _mark_promotion(ax: Any, report: DemoReport, n_checks: int) -> None:
    """Vertical lines after the tweet check (number 2): the promotion, then the reload."""
    if not report.promoted or n_checks < 2:
        return
    version = report.retrain.get("version")
    ax.axvline(2.33, color="C1", ls=":", label=f"promoted v{version}")
    reload_s = "" if report.reload_seconds is None else f" ({report.reload_seconds:.1f} s)"
    ax.axvline(2.67, color="C4", ls="-.", label=f"server reloaded{reload_s}")


def _before_after_bars(ax: Any, report: DemoReport) -> None:
    names = ["accuracy", "f1"]
    before = [report.tweets_before.get(n, 0.0) for n in names]
    after = [report.tweets_after.get(n, 0.0) for n in names]
    pos = np.arange(len(names))
    ax.bar(pos - 0.2, before, 0.4, label=f"before (v{report.production_before})")
    ax.bar(pos + 0.2, after, 0.4, label=f"after (v{report.production_after})")
    for i in range(len(names)):
        ax.text(pos[i] - 0.2, before[i] + 0.01, f"{before[i]:.3f}", ha="center", fontsize=8)
        ax.text(pos[i] + 0.2, after[i] + 0.01, f"{after[i]:.3f}", ha="center", fontsize=8)
    ax.set_xticks(pos, ["tweet accuracy", "tweet F1"])
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("Served model on held-out tweets")


def draw_story(settings: Settings, report: DemoReport, path: Path) -> Path:
    """``story_figure`` of ``report`` saved as a PNG at ``path``."""
    fig = story_figure(report, settings.drift.alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


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

    @classmethod
    def load(cls, demo: DemoSettings) -> _Traffic:
        tweets = load_corpus("tweets")
        return cls(
            imdb=load_corpus("imdb").test.sample(demo.imdb_traffic, seed=101),
            tweets=tweets.train.sample(demo.tweet_traffic, seed=102),
            held_out=tweets.test.head(demo.eval_tweets),
        )


def _send_and_check(
    story: _Story, client: httpx.Client, split: Split, what: str, window: int
) -> tuple[Any, list[dict[str, Any]]]:
    """Send ``split`` (``what``: its name) through the API, then run a drift check on the
    served window."""
    from sentiment_ops.drift.check import run_drift_check
    from sentiment_ops.tracking.registry import Registry

    story.stage("traffic", f"{len(split)} {what} → /predict/batch")
    preds = send_traffic(client, split.texts)
    story.report.sent_rows += len(split)
    time.sleep(1.0)  # the store writer flushes in the background
    check = run_drift_check(story.settings, Registry(story.settings), alias=story.settings.serve.alias, window=window)
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
    from sentiment_ops.labeling.queue import choose_to_label

    strategy = Strategy(story.labels_from)
    if strategy is Strategy.RANDOM or n == 0 or story.store is None:
        return preds[:n], truth[:n]
    queue = choose_to_label(
        story.settings, story.store, strategy, n, window=len(preds), version=story.report.production_before
    )
    picked = {item.record.id for item in queue.items}
    rows = [(p, label) for p, label in zip(preds, truth.tolist(), strict=True) if p["id"] in picked]
    return [p for p, _ in rows], np.array([label for _, label in rows], dtype=np.int64)


def _retrain(story: _Story, check_id: str | None) -> None:
    """Retrain with replay and gate, promoting when the gate passes."""
    from sentiment_ops.retraining import CandidateNotPromoted, retrain

    demo, report = story.settings.demo, story.report
    story.stage("retrain", "fine-tuning from production on the labels + IMDB replay")
    try:
        result = retrain(
            story.settings,
            promote_if_better=True,
            triggered_by=check_id,
            replay_ratio=demo.replay_ratio,
            progress=story.progress,
        )
    except CandidateNotPromoted as exc:  # a refused candidate is part of the story
        result = exc.result
    report.retrain = {
        "version": result.version,
        "gate_passed": result.gate.passed,
        "reasons": list(result.gate.reasons),
        "summary": result.summary(),
        "metrics": result.metrics,
    }
    report.promoted = result.promoted
    story.stage("gate", f"{result.summary()} ({story.lap('retrain + gate')})")


def _check_after_reload(story: _Story, window: int) -> None:
    """A drift check of the new version on the held-out tweets it has just served (none when
    they are fewer than ``drift.min_rows``)."""
    from sentiment_ops.drift.check import run_drift_check
    from sentiment_ops.errors import NotEnoughDataError
    from sentiment_ops.tracking.registry import Registry

    time.sleep(1.0)  # the store writer flushes in the background
    try:
        registry = Registry(story.settings)
        check = run_drift_check(story.settings, registry, alias=story.settings.serve.alias, window=window)
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
        _check_after_reload(story, min(demo.window, len(traffic.held_out)))


def run_demo(
    settings: Settings, opts: DemoOptions, stage: StageFn = _quiet, progress: ProgressFn = no_progress
) -> DemoReport:
    """The whole story (see the module docstring), with the ``demo`` settings; ``progress``
    follows the training and the retraining step by step."""
    from sentiment_ops.store import open_store

    story = _Story(settings, DemoReport(), stage, progress)
    report = story.report
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    report.production_before, report.trained_new_model = ensure_production(settings, opts, stage, progress=progress)
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
