"""``sentops demo``: the whole loop on embedded defaults, with a real server."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from sentiment_ops.cli.common import console, err_console, fmt, print_json, settings_from


def demo(
    ctx: typer.Context,
    fresh: bool = typer.Option(False, "--fresh", help="Train a new quick model even if production exists."),
    out: Path = typer.Option(Path("sentops-demo"), "--out", help="Folder for the picture and the server log."),
    train_samples: int = typer.Option(
        None, "--train-samples", min=1, help="IMDB reviews for the quick model (default: demo.train_samples, 3000)."
    ),
    tweets: int = typer.Option(
        None, "--tweets", min=1, help="Tweets sent as drifted traffic (default: demo.tweet_traffic, 700)."
    ),
    labeled: int = typer.Option(
        None, "--labeled", min=0, help="How many of them a (simulated) person labels (default: demo.labeled, 600)."
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
    opts = DemoOptions(reuse=not fresh, out_dir=out)

    def stage(name: str, message: str) -> None:
        err_console.print(f"[bold cyan]{name:<8}[/bold cyan] {message}", highlight=False)

    report = run_demo(settings, opts, stage)
    if as_json:
        print_json(report.to_dict())
        return
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
    table.add_row("labels posted", str(report.labels_posted))
    table.add_row("gate", str(report.retrain.get("summary", "")))
    table.add_row("hot reload", "–" if report.reload_seconds is None else f"{report.reload_seconds:.1f} s")
    table.add_row(
        "tweets (held out)",
        f"accuracy {fmt(report.tweets_before.get('accuracy'), 3)} → {fmt(report.tweets_after.get('accuracy'), 3)}, "
        f"F1 {fmt(report.tweets_before.get('f1'), 3)} → {fmt(report.tweets_after.get('f1'), 3)}",
    )
    table.add_row("rows stored / sent", f"{report.stored_rows} / {report.sent_rows}")
    table.add_row("picture", str(report.picture))
    console.print(table)
    console.print(f"explore: mlflow ui --backend-store-uri {settings.tracking_uri}")
