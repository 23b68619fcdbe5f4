"""``sentops score``: batch inference of a file on this machine."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from sentiment_ops.cli.choices import Backend, ScoreEngine, value
from sentiment_ops.cli.common import console, err_console, from_setting, print_json, settings_from
from sentiment_ops.cli.display import compose, plain

if TYPE_CHECKING:
    from sentiment_ops.scoring import ScoreProgress, ScoreSummary

MAX_ERRORS_SHOWN = 20


Input = Annotated[str, typer.Argument(metavar="INPUT", help="CSV, JSONL or Parquet file (or Spark URI).")]
Output = Annotated[
    str,
    typer.Option(
        "--output",
        "-o",
        help="Parquet file to write (with --spark a Parquet folder); never the input. It replaces only an "
        "earlier output of sentops score, unless --overwrite.",
    ),
]
TextColumn = Annotated[str, typer.Option("--text-column", help="Column (field) holding the texts.")]
Alias = Annotated[
    str | None,
    typer.Option("--alias", help=f"Score with the version this alias points to ({from_setting('serve.alias')})."),
]
Version = Annotated[int | None, typer.Option("--version", help="Score with this model version instead.")]
Workers = Annotated[int | None, typer.Option("--workers", min=1, help="Worker processes (default: one per core).")]
BackendOption = Annotated[
    Backend | None,
    typer.Option("--backend", help=f"onnx (int8) or torch (fp32) ({from_setting('serve.backend')}; on Spark: torch)."),
]
Embedding = Annotated[bool, typer.Option("--embedding", help="Also write each text's embedding.")]
Log = Annotated[
    bool, typer.Option("--log", help="Also log the predictions to the inference store (sentops drift --source batch).")
]
EngineOption = Annotated[
    ScoreEngine,
    typer.Option("--engine", help="local: this machine's cores; spark: a Spark job (mlflow.pyfunc.spark_udf)."),
]
SparkMaster = Annotated[
    str | None,
    typer.Option(
        "--spark",
        metavar="MASTER",
        help="Run on Spark at this master URL (local[2], spark://HOST:7077, yarn); implies --engine spark.",
    ),
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace a file or folder at --output that sentops score did not write.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the summary as JSON (no progress bar).")]


def score(
    ctx: typer.Context,
    input_file: Input,
    *,
    output: Output,
    text_column: TextColumn = "text",
    alias: Alias = None,
    version: Version = None,
    workers: Workers = None,
    backend: BackendOption = None,
    embedding: Embedding = False,
    log: Log = False,
    engine: EngineOption = ScoreEngine.local,
    spark_master: SparkMaster = None,
    overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """Score a file of texts too big for the API into a Parquet file of predictions.

    Reads CSV, JSONL or Parquet in chunks (memory stays bounded), runs the model's ONNX int8
    graph in one worker process per core, and writes row (the input's data row number,
    1-based), label (class index), label_name, probability (of positive: binary models),
    confidence, one p_<class> column per class of the model (p_negative, p_neutral, ...)
    and with --embedding the embedding. The output appears only when complete; rerun the
    same command after an interruption and it resumes after the last finished chunk. Bad
    rows (empty text, undecodable bytes, control characters, malformed records) are
    reported with their line numbers and left out.

    The output is never the input (the same path, a symlink or hard link to it, a folder
    holding it or inside it): refused even with --overwrite. An existing file or folder at
    --output is replaced only when sentops score wrote it (its marker: Parquet metadata of
    a file, a _SENTOPS_SCORE file in a folder), so a rerun needs no flag; anything else is
    refused unless --overwrite is given.

    With --spark MASTER (or --engine spark under spark-submit) it runs on Apache Spark through
    MLflow's spark_udf over the logged model into a Parquet folder (docs/scoring.md).

    Example: sentops score reviews.csv --output scores.parquet --log

    Exit codes: 0 every row scored · 2 the output is the input, or in the way (--overwrite),
    nothing written · 65 some rows bad (the others are written) or the input unreadable · 66
    unknown alias/version · 70 store error (--log) · 71 model cannot be loaded.
    """
    from sentiment_ops.scoring.run import ScoreJob

    settings = settings_from(ctx, {"serve.alias": alias})
    job = ScoreJob(input_file, output, text_column, version, embedding, overwrite, value(backend), log, workers)
    if spark_master is not None or engine is ScoreEngine.spark:
        from sentiment_ops.scoring.spark import score_on_spark, unsupported

        unsupported(log=log, workers=workers)
        err_console.print(f"scoring on Spark ({spark_master or 'the session spark-submit made, else local[*]'})")
        summary = score_on_spark(settings, job, master=spark_master)
    else:
        from sentiment_ops.scoring import score_file

        with _progress_bar(not as_json) as progress:
            summary = score_file(settings, job, progress=progress)
    print_json(summary.to_dict()) if as_json else _print_summary(summary)
    summary.raise_for_errors()  # bad rows: SentopsGroup prints the one error line, exit 65


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Callable[[ScoreProgress], None] | None]:
    """A bar over the input (bytes, or Parquet rows) with rows, texts/s and the ETA."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]scoring"),
        BarColumn(),
        TextColumn("{task.fields[rows]:>12,} rows · {task.fields[rate]:>7,.0f} texts/s · {task.fields[bad]:,} bad"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
    ) as bar:
        task = bar.add_task("score", total=None, rows=0, rate=0.0, bad=0)

        def update(p: ScoreProgress) -> None:
            rate = p.scored / max(time.perf_counter() - start, 1e-9)
            bar.update(task, completed=p.position, total=max(p.total, 1), rows=p.rows, rate=rate, bad=p.bad)

        yield update


def _print_summary(s: ScoreSummary) -> None:
    resumed = f" (resumed after row {s.resumed_rows:,})" if s.resumed_rows else ""
    on_spark = " on Spark" if s.engine == "spark" else ""
    console.print(
        compose(
            f"{s.rows:,} rows{resumed}: [bold]{s.scored:,} scored[/bold], {s.bad:,} bad → ",
            plain(
                f"{s.output} ({s.model_name} v{s.model_version}, {s.backend}{on_spark}, "
                f"{s.workers} worker(s), {s.texts_per_s:,.0f} texts/s)"
            ),
        )
    )
    if s.logged:
        console.print(f"logged {s.logged:,} predictions to the inference store (sentops drift --source batch)")
    for err in s.errors[:MAX_ERRORS_SHOWN]:
        err_console.print(plain(f"{s.input}: line {err['line']}: {err['message']}"), highlight=False)
    if s.bad > MAX_ERRORS_SHOWN:
        err_console.print(f"… and {s.bad - MAX_ERRORS_SHOWN:,} more bad rows (see --json)")
