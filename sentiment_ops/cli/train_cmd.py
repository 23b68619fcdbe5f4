"""``sentops train``: fine-tune, evaluate, log to MLflow, register."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from sentiment_ops.cli.choices import Device, value
from sentiment_ops.cli.common import (
    LEGACY_CONFIG_HELP,
    console,
    fmt,
    from_setting,
    print_json,
    settings_from,
    stage_progress,
)

if TYPE_CHECKING:
    from sentiment_ops.jobs.train import TrainResult


def train(
    ctx: typer.Context,
    epochs: float = typer.Option(None, help=f"Training epochs ({from_setting('train.epochs')})."),
    max_samples: int = typer.Option(None, "--max-samples", help="Training rows to sample."),
    eval_samples: int = typer.Option(None, "--eval-samples", help="Golden-test rows to score (first N)."),
    max_length: int = typer.Option(None, "--max-length", help="Tokens per text (head + tail kept)."),
    learning_rate: float = typer.Option(None, "--learning-rate", "--lr", help="Peak learning rate."),
    batch_size: int = typer.Option(None, "--batch-size", help="Training batch size."),
    base_model: str = typer.Option(None, "--base-model", help="'minilm' (bundled), a HF id or a local path."),
    data: str = typer.Option(None, "--data", help="imdb | rotten_tomatoes | tweets | tweets3 | FILE | hf:NAME"),
    labels: str = typer.Option(None, "--labels", help="The data's classes in index order, comma-separated."),
    seed: int = typer.Option(None, "--seed", help="Random seed."),
    device: Device = typer.Option(None, "--device", help=f"Where to train ({from_setting('train.device')})."),
    config: Path = typer.Option(None, "--config", hidden=True, help=LEGACY_CONFIG_HELP),
    register: bool = typer.Option(None, "--register/--no-register", help="Register a model version."),
    promote: bool = typer.Option(False, "--promote", help="Point serve.alias (production) at the new version."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Fine-tune a sentiment classifier and track it in MLflow.

    Example: sentops train --data tweets3 (classes: the data's, 2 to 20, saved with the model)
    """
    if config is not None:
        ctx.find_root().obj["config"] = config
    settings = settings_from(
        ctx,
        {
            "train.epochs": epochs,
            "train.max_samples": max_samples,
            "train.eval_samples": eval_samples,
            "train.max_length": max_length,
            "train.learning_rate": learning_rate,
            "train.batch_size": batch_size,
            "train.base_model": base_model,
            "train.data": data,
            "train.labels": None if labels is None else [n.strip() for n in labels.split(",")],
            "train.seed": seed,
            "train.device": value(device),
            "train.register_model": register,
        },
    )
    from sentiment_ops.jobs.train import train as run_training

    with stage_progress(not as_json) as progress:
        result = run_training(settings, promote=promote, progress=progress)
    if not result.run_id:  # a rank > 0 under torchrun / accelerate launch: rank 0 reports
        return
    if as_json:
        print_json(
            {
                "run_id": result.run_id,
                "model_uri": result.model_uri,
                "version": result.version,
                "metrics": result.metrics,
                "data": result.data,
                "promoted": result.promoted.__dict__ if result.promoted else None,
            }
        )
        return
    _render(result, settings.mlflow.model_name)


def _render(result: TrainResult, model_name: str) -> None:
    columns = ("accuracy", "precision", "recall", "f1", "roc_auc", "loss")
    table = Table(title="Evaluation")
    table.add_column("split")
    for col in columns:
        table.add_column(col, justify="right")
    for split in ("val", "test", "golden"):
        table.add_row(split, *(fmt(result.metrics.get(f"{split}_{c}")) for c in columns))
    console.print(table)
    console.print(f"run id: [bold]{result.run_id}[/bold]   train time: {result.train_seconds:.1f} s")
    if result.version is None:
        return
    console.print(f"registered [bold]{model_name}[/bold] version [bold]{result.version}[/bold]")
    moved = result.promoted
    if moved:
        console.print(f"{moved.alias}: v{moved.from_version or '–'} → [bold]v{moved.to_version}[/bold]")
    else:
        console.print(f"promote it with: sentops promote --version {result.version}")
