"""``sentops demo``: the whole loop on embedded defaults, with a real server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sentiment_ops.cli.common import console, err_console, fmt, from_setting, print_json, settings_from
from sentiment_ops.labeling import Strategy
from sentiment_ops.redaction import redact

if TYPE_CHECKING:
    from sentiment_ops.demo import DemoReport

StageFn = Callable[[str, str], None]
ProgressFn = Callable[[str, int, int], None]


@contextmanager
def _demo_display(bars: bool) -> Iterator[tuple[StageFn, ProgressFn]]:
    """Phase lines on stderr and, with ``bars``, a progress bar per step of the training
    and the retraining (steps done / total, elapsed, time left), right under the phase line
    that started them: each phase line ends the bars before it, which stay on screen."""
    columns = (
        TextColumn("  [bold]{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    live: list[Progress] = []  # the bars of the current phase, while there are some
    tasks: dict[str, TaskID] = {}

    def close_bars() -> None:
        if live:
            live.pop().stop()
            tasks.clear()

    def stage(name: str, message: str) -> None:
        close_bars()
        err_console.print(f"[bold cyan]{name:<8}[/bold cyan] {message}", highlight=False)

    def progress(name: str, done: int, total: int) -> None:
        if not live:
            live.append(Progress(*columns, console=err_console, transient=False))
            live[0].start()
        if name not in tasks:
            tasks[name] = live[0].add_task(name, total=max(total, 1))
        live[0].update(tasks[name], completed=done, total=max(total, 1))

    try:
        yield stage, (progress if bars else lambda name, done, total: None)
    finally:
        close_bars()


def demo(
    ctx: typer.Context,
    fresh: bool = typer.Option(False, "--fresh", help="Train a new quick model even if production exists."),
    out: Path = typer.Option(Path("sentops-demo"), "--out", help="Folder for the picture and the server log."),
    train_samples: int = typer.Option(
        None, "--train-samples", min=1, help=f"IMDB reviews for the quick model ({from_setting('demo.train_samples')})."
    ),
    tweets: int = typer.Option(
        None, "--tweets", min=1, help=f"Tweets sent as drifted traffic ({from_setting('demo.tweet_traffic')})."
    ),
    labeled: int = typer.Option(
        None, "--labeled", min=0, help=f"How many of them a (simulated) person labels ({from_setting('demo.labeled')})."
    ),
    labels_from: Strategy = typer.Option(
        Strategy.MIXED,
        "--labels-from",
        help="Which served tweets the person labels: an active selection, or random (the first ones sent).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Run the whole loop on bundled data: train → promote → serve → IMDB traffic (no drift)
    → tweet traffic (drift) → labels → retrain → gate → promote → hot reload → report.

    Everything stays in the sentops home (open it with `mlflow ui`); the picture of the story
    goes to OUT/demo.png. About 13 minutes on 2 CPU cores (7 of them training the model).
    What it trains and sends is the `demo` settings section (configs/default.yaml); the server
    it starts serves with the same settings.

    Example: sentops demo --out /tmp/demo
    """
    from sentiment_ops.demo import DemoOptions, run_demo

    settings = settings_from(
        ctx, {"demo.train_samples": train_samples, "demo.tweet_traffic": tweets, "demo.labeled": labeled}
    )
    opts = DemoOptions(reuse=not fresh, out_dir=out, labels_from=labels_from.value)

    with _demo_display(not as_json) as (stage, progress):
        report = run_demo(settings, opts, stage, progress)
    if as_json:
        print_json(report.to_dict())
        return
    _print_report(report, redact(settings.tracking_uri))


def _print_report(report: DemoReport, tracking_uri: str) -> None:
    """The demo's story as one table, and where to look at it in MLflow."""
    table = Table(title="sentops demo")
    table.add_column("step")
    table.add_column("result")
    table.add_row("production", f"v{report.production_before} → v{report.production_after}")
    table.add_row(
        "IMDB traffic", f"drift={report.drift_imdb.get('drift')}  p={fmt(report.drift_imdb.get('p_value'), 3)}"
    )
    table.add_row(
        "tweet traffic", f"drift={report.drift_tweets.get('drift')}  p={fmt(report.drift_tweets.get('p_value'), 3)}"
    )
    table.add_row("labels posted", f"{report.labels_posted} (chosen by {report.labels_from} selection)")
    table.add_row("gate", str(report.retrain.get("summary", "")))
    table.add_row("hot reload", "–" if report.reload_seconds is None else f"{report.reload_seconds:.1f} s")
    after = report.drift_after
    table.add_row(
        f"tweets after reload (v{report.production_after})",
        f"drift={after.get('drift')}  p={fmt(after.get('p_value'), 3)}  "
        f"reference: {report.retrain.get('reference', {}).get('source', '–')}"
        if after
        else "– (not promoted, or too few rows)",
    )
    table.add_row(
        "tweets (held out)",
        f"accuracy {fmt(report.tweets_before.get('accuracy'), 3)} → {fmt(report.tweets_after.get('accuracy'), 3)}, "
        f"F1 {fmt(report.tweets_before.get('f1'), 3)} → {fmt(report.tweets_after.get('f1'), 3)}",
    )
    table.add_row("rows stored / sent", f"{report.stored_rows} / {report.sent_rows}")
    table.add_row("picture", str(report.picture))
    console.print(table)
    console.print(f"explore: mlflow ui --backend-store-uri {tracking_uri}")
