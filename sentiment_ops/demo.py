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

if TYPE_CHECKING:
    from sentiment_ops.registry import Registry

StageFn = Callable[[str, str], None]  # (stage, message)


def _quiet(stage: str, message: str) -> None:
    return None


@dataclass
class DemoOptions:
    """How this run goes; what it trains and sends is the ``demo`` settings section."""

    reuse: bool = True  # reuse the production model when there is one
    out_dir: Path = field(default_factory=lambda: Path("sentops-demo"))


@dataclass
class DemoReport:
    base_url: str = ""
    production_before: int | None = None
    production_after: int | None = None
    trained_new_model: bool = False
    drift_imdb: dict[str, Any] = field(default_factory=dict)
    drift_tweets: dict[str, Any] = field(default_factory=dict)
    labels_posted: int = 0
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


def ensure_production(
    settings: Settings, opts: DemoOptions, stage: StageFn = _quiet, registry: Registry | None = None
) -> tuple[int, bool]:
    """The production version: reused when there is one (and ``reuse``), else trained now."""
    from sentiment_ops.registry import Registry
    from sentiment_ops.training import train

    registry = registry or Registry(settings)
    alias = settings.serve.alias
    current = registry.alias_version(alias)
    if current is not None and opts.reuse:
        stage("model", f"reusing {settings.mlflow.model_name} v{current} ({alias})")
        return current, False
    stage("model", f"training a quick model on {settings.demo.train_samples} IMDB reviews")
    result = train(demo_train_settings(settings), registry=registry, promote=True)
    if result.version is None:
        raise SentopsError("the demo needs a registered model (train.register_model is false)")
    stage("model", f"v{result.version} golden accuracy {result.metrics['golden_accuracy']:.3f} → {alias}")
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


def draw_story(settings: Settings, report: DemoReport, path: Path) -> Path:
    """Drift p-values / cosine distance over the checks, and tweet accuracy / F1 before vs after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sentiment_ops.store import InferenceStore

    history = InferenceStore(settings.store_url).drift_history(settings.mlflow.model_name)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if history:
        xs = list(range(1, len(history) + 1))
        ax1.plot(xs, [h["p_value"] for h in history], "o-", label="drift test p-value (permutation)")
        ax1.plot(xs, [h["cosine_distance"] for h in history], "s--", label="cosine distance (seed)")
        ax1.axhline(settings.drift.alpha, color="red", lw=0.8, label=f"alpha {settings.drift.alpha}")
        for x, h in zip(xs, history, strict=True):
            ax1.annotate("drift" if h["drift"] else "ok", (x, h["p_value"]), textcoords="offset points", xytext=(4, 6))
        ax1.set_yscale("symlog", linthresh=1e-3)
        ax1.set_xlabel("drift check")
        ax1.legend(fontsize=8)
    ax1.set_title("Drift checks over time")
    names = ["accuracy", "f1"]
    before = [report.tweets_before.get(n, 0.0) for n in names]
    after = [report.tweets_after.get(n, 0.0) for n in names]
    pos = np.arange(len(names))
    ax2.bar(pos - 0.2, before, 0.4, label=f"before (v{report.production_before})")
    ax2.bar(pos + 0.2, after, 0.4, label=f"after (v{report.production_after})")
    for i in range(len(names)):
        ax2.text(pos[i] - 0.2, before[i] + 0.01, f"{before[i]:.3f}", ha="center", fontsize=8)
        ax2.text(pos[i] + 0.2, after[i] + 0.01, f"{after[i]:.3f}", ha="center", fontsize=8)
    ax2.set_xticks(pos, ["tweet accuracy", "tweet F1"])
    ax2.set_ylim(0, 1.05)
    ax2.legend(fontsize=8)
    ax2.set_title("Served model on held-out tweets")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- the whole story -----------------------------------------------------------------------
@dataclass
class _Story:
    """What the phases of one demo run share."""

    settings: Settings
    report: DemoReport
    stage: StageFn
    clock: float = field(default_factory=time.monotonic)

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.report.seconds[name] = round(now - self.clock, 1)
        self.clock = now


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
    story: _Story, client: httpx.Client, split: Split, what: tuple[str, str], window: int
) -> tuple[Any, list[dict[str, Any]]]:
    """Send ``split`` (``what``: its name, the traffic's name) through the API, then run a
    drift check on the served window."""
    from sentiment_ops.drift.check import run_drift_check

    story.stage("traffic", f"{len(split)} {what[0]} → /predict/batch")
    preds = send_traffic(client, split.texts)
    story.report.sent_rows += len(split)
    time.sleep(1.0)  # the store writer flushes in the background
    check = run_drift_check(story.settings, alias=story.settings.serve.alias, window=window)
    story.stage("drift", f"{what[1]} traffic: {'DRIFT' if check.drift else 'no drift'} (p = {check.p_value:.3f})")
    return check, preds


def _drift_and_labels(story: _Story, client: httpx.Client, traffic: _Traffic, token: str) -> str | None:
    """IMDB traffic (no drift), tweet traffic (drift), labels, tweets measured; returns the
    id of the drift check that triggers the retraining."""
    demo, report = story.settings.demo, story.report
    check, _ = _send_and_check(
        story, client, traffic.imdb, ("IMDB reviews", "IMDB"), min(demo.window, len(traffic.imdb))
    )
    report.drift_imdb = drift_summary(check)
    story.lap("imdb traffic + drift")
    check, preds = _send_and_check(story, client, traffic.tweets, ("tweets", "tweet"), demo.window)
    report.drift_tweets = drift_summary(check)
    story.lap("tweet traffic + drift")
    n = min(demo.labeled, len(preds))
    report.labels_posted = post_labels(client, preds[:n], traffic.tweets.labels[:n], token)
    story.stage("labels", f"a person labelled {n} tweets (POST /feedback)")
    report.tweets_before = score_through_api(client, traffic.held_out)
    report.sent_rows += len(traffic.held_out)
    f1 = report.tweets_before["f1"]
    story.stage(
        "measure", f"served v{report.production_before} on {len(traffic.held_out)} held-out tweets: F1 {f1:.3f}"
    )
    story.lap("labels + measure")
    return check.check_id


def _retrain_and_reload(story: _Story, client: httpx.Client, traffic: _Traffic, check_id: str | None) -> None:
    """Retrain with replay, gate, promote when it passes; the server reloads; tweets measured."""
    from sentiment_ops.retraining import CandidateNotPromoted, retrain

    demo, report = story.settings.demo, story.report
    story.stage("retrain", "fine-tuning from production on the labels + IMDB replay")
    try:
        result = retrain(story.settings, promote_if_better=True, triggered_by=check_id, replay_ratio=demo.replay_ratio)
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
    story.stage("gate", result.summary())
    story.lap("retrain + gate")
    if result.promoted:
        report.reload_seconds = round(wait_for_version(client, result.version, demo.reload_timeout_s), 1)
        story.stage(
            "reload", f"the server serves v{result.version} ({report.reload_seconds:.1f} s after the alias moved)"
        )
    report.production_after = int(client.get("/model").json()["version"])
    report.tweets_after = score_through_api(client, traffic.held_out)
    report.sent_rows += len(traffic.held_out)
    story.stage("measure", f"served v{report.production_after}: F1 {report.tweets_after['f1']:.3f}")
    story.lap("reload + measure")


def run_demo(settings: Settings, opts: DemoOptions, stage: StageFn = _quiet) -> DemoReport:
    """The whole story (see the module docstring), with the ``demo`` settings."""
    from sentiment_ops.store import InferenceStore

    story = _Story(settings, DemoReport(), stage)
    report = story.report
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    report.production_before, report.trained_new_model = ensure_production(settings, opts, stage)
    story.lap("model")
    traffic = _Traffic.load(settings.demo)
    store = InferenceStore(settings.store_url, store_text=settings.store.store_text)
    try:
        rows_before = store.count(settings.mlflow.model_name, source="api")
        server = ServerProcess(settings, log_path=opts.out_dir / "server.log")
        try:
            stage("serve", f"starting sentops serve on {server.base_url}")
            server.wait_ready(settings.demo.startup_timeout_s)
            report.base_url = server.base_url
            story.lap("serve")
            with httpx.Client(base_url=server.base_url, timeout=60) as client:
                check_id = _drift_and_labels(story, client, traffic, server.feedback_token)
                _retrain_and_reload(story, client, traffic, check_id)
        finally:
            server.stop()
        report.stored_rows = store.count(settings.mlflow.model_name, source="api") - rows_before
    finally:
        store.close()
    report.picture = str(draw_story(settings, report, opts.out_dir / "demo.png"))
    return report
