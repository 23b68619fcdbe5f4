"""``sentops feedback import | export``: true labels in and out of the inference store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sentiment_ops.cli.common import console, err_console, print_json, settings_from
from sentiment_ops.cli.display import compose, plain
from sentiment_ops.labeling import Strategy

if TYPE_CHECKING:
    from sentiment_ops.config import Settings
    from sentiment_ops.feedback import ExportSummary, ImportSummary
    from sentiment_ops.labeling.queue import Selection, SelectionExport
    from sentiment_ops.labels import LabelSet
    from sentiment_ops.store import InferenceStore

app = typer.Typer(help="Import true labels, export predictions to label.", no_args_is_help=True)

MAX_ERRORS_SHOWN = 20
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


def _store(ctx: typer.Context) -> tuple[Settings, InferenceStore]:
    from sentiment_ops.store import open_store

    settings = settings_from(ctx)
    return settings, open_store(settings)


def _serving_classes(settings: Settings) -> LabelSet:
    """The classes of the version behind ``serve.alias`` (negative / positive when none is)."""
    from sentiment_ops.labels import BINARY
    from sentiment_ops.tracking.registry import Registry

    registry = Registry(settings)
    version = registry.alias_version(settings.serve.alias)
    return BINARY if version is None else registry.version_classes(version)


@app.command("import")
def import_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV or JSONL with id,label or text,label rows.")],
    *,
    as_json: JsonFlag = False,
) -> None:
    """Import true labels: id,label for logged predictions, text,label for new texts.

    A label is a class name of the serving model (any case) or its index 0..k-1.
    Bad rows are reported with their line numbers and the good rows are kept; re-importing
    a file applies nothing twice. Exit 0 when every row was good, 65 when some were bad
    (the good ones are still applied).

    Example: sentops feedback import labels.csv
    """
    from sentiment_ops.feedback import import_feedback

    settings, store = _store(ctx)
    try:
        summary = import_feedback(store, file, settings.mlflow.model_name, _serving_classes(settings))
    finally:
        store.close()
    if as_json:
        print_json(summary.to_dict())
    else:
        _print_import(summary, file)
    summary.raise_for_errors()  # bad rows: SentopsGroup prints the one error line, exit 65


def _print_import(summary: ImportSummary, file: Path) -> None:
    console.print(
        f"{summary.rows} rows: [bold]{summary.applied} applied[/bold] "
        f"({summary.labeled} labels on logged predictions, {summary.added} new texts, "
        f"{summary.relabeled} relabeled), {summary.unchanged} unchanged, "
        f"{summary.skipped} blank, {len(summary.errors)} bad"
    )
    for err in summary.errors[:MAX_ERRORS_SHOWN]:
        err_console.print(plain(f"{file}: {err}"), highlight=False)
    if len(summary.errors) > MAX_ERRORS_SHOWN:
        err_console.print(f"… and {len(summary.errors) - MAX_ERRORS_SHOWN} more bad rows (see --json)")


ExportFileArg = Annotated[Path, typer.Argument(help="Output .csv or .jsonl file (a new one, unless --overwrite).")]
UnlabeledFlag = Annotated[bool, typer.Option("--unlabeled", help="Only predictions without a label yet.")]
WindowOption = Annotated[
    int | None,
    typer.Option(
        "--window", min=1, help="Only the N most recent matching predictions (with --select: chosen from; 5000)."
    ),
]
SinceOption = Annotated[
    datetime | None, typer.Option("--since", help="Only predictions logged since this date/time (UTC).")
]
SelectOption = Annotated[
    Strategy | None,
    typer.Option("--select", help="Choose the texts worth labeling first (unlabeled, one row per text)."),
]
NOption = Annotated[int | None, typer.Option("--n", min=1, help="How many texts --select chooses (default 100).")]
SeedOption = Annotated[int | None, typer.Option("--seed", min=0, help="Seed of --select's random choices (default 0).")]
OverwriteFlag = Annotated[bool, typer.Option("--overwrite", help="Replace FILE if it exists (it keeps its mode).")]


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    file: ExportFileArg,
    *,
    unlabeled: UnlabeledFlag = False,
    window: WindowOption = None,
    since: SinceOption = None,
    select: SelectOption = None,
    n: NOption = None,
    seed: SeedOption = None,
    overwrite: OverwriteFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Export served predictions as id,text,prediction,confidence,label for labeling.

    Fill in the label column and import the file back with `sentops feedback import`.
    A model with more than two classes writes prediction and label as class names.
    With --select, the N unlabeled texts the production version served that are worth a
    person's time, in the order to label them: random, uncertain (closest to the decision
    boundary), novel (farthest from the drift reference) or mixed (the most uncertain of
    each cluster of the served embeddings, so the labels are not near-duplicates).

    The file is owner-only (0600) and an existing one is never replaced without --overwrite
    (it may hold a person's labels). In a CSV, a text a spreadsheet would run as a formula
    (first character = + - @, tab or CR), and a text that starts with ' or starts or ends with
    white space, gets one ' in front; `sentops feedback import` takes it off again. With
    store.store_text false there are no texts to export (exit 65).

    Example: sentops feedback export --select mixed --n 200 to_label.csv
    """
    if select is None and (n is not None or seed is not None):
        raise typer.BadParameter("--n and --seed go with --select", param_hint="--n / --seed")
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    if select is not None:
        from sentiment_ops.labeling.queue import Selection

        selection = Selection(select, n or 100, seed=seed or 0, window=window, since=since)
        _print_selection(_export_selection(ctx, selection, file, overwrite), as_json)
    else:
        _print_export(_export_all(ctx, file, unlabeled, window, since, overwrite), as_json)


def _export_selection(ctx: typer.Context, selection: Selection, file: Path, overwrite: bool) -> SelectionExport:
    """``labeling.export_selection`` over the store, with the version from the registry."""
    from sentiment_ops.labeling.queue import export_selection
    from sentiment_ops.tracking.registry import Registry

    settings, store = _store(ctx)
    try:
        return export_selection(settings, Registry(settings), store, selection, file, overwrite=overwrite)
    finally:
        store.close()


def _export_all(
    ctx: typer.Context, file: Path, unlabeled: bool, window: int | None, since: datetime | None, overwrite: bool
) -> ExportSummary:
    """``feedback.export_feedback``: the matching served predictions, without a choice."""
    from sentiment_ops.feedback import export_feedback

    settings, store = _store(ctx)
    try:
        return export_feedback(
            store,
            file,
            unlabeled=unlabeled,
            window=window,
            since=since,
            model_name=settings.mlflow.model_name,
            overwrite=overwrite,
            classes=_serving_classes(settings),
        )
    finally:
        store.close()


def _print_export(summary: ExportSummary, as_json: bool) -> None:
    if as_json:
        print_json(summary.to_dict())
        return
    console.print(compose(f"wrote [bold]{summary.rows}[/bold] predictions to ", plain(summary.path)))
    if summary.skipped_no_text:
        console.print(f"left out {summary.skipped_no_text} predictions logged without their text (store_text off)")


def _print_selection(chosen: SelectionExport, as_json: bool) -> None:
    if as_json:
        print_json(chosen.to_dict())
        return
    q = chosen.queue
    console.print(
        compose(
            f"wrote [bold]{chosen.export.rows}[/bold] texts chosen by {q.strategy} (seed {q.seed}) from "
            f"{q.pool} unlabeled served texts of version {q.version} to ",
            plain(chosen.export.path),
        )
    )
    left_out = {
        "already labeled": q.labeled,
        "repeated texts": q.duplicates,
        "logged without text": q.no_text,
        "without an embedding of the serving backend": q.no_embedding,
    }
    parts = [f"{count} {why}" for why, count in left_out.items() if count]
    if parts:
        console.print(f"left out of the last {q.window} predictions: " + ", ".join(parts))
