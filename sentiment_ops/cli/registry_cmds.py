"""``sentops register | promote | rollback | models``: versions and aliases."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from sentiment_ops.cli.common import console, fmt, from_setting, print_json, settings_from
from sentiment_ops.cli.display import compose, plain
from sentiment_ops.errors import NotFoundError

RUN_ID_CHARS = 8  # of MLflow's 32 hex digits: enough to tell a model's runs apart
CLASSES_CHARS = 12  # of the classes cell of `sentops models` (80 columns hold the table)

HISTORY_TABLE_ROWS = 50  # a terminal shows the recent moves; --json / --last 0 give all


def _registry(ctx: typer.Context):  # type: ignore[no-untyped-def]
    from sentiment_ops.tracking.registry import Registry

    return Registry(settings_from(ctx))


def register(
    ctx: typer.Context,
    run_id: str = typer.Option(..., "--run-id", help="MLflow run that logged the model."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Register the model logged by a run as a new model version.

    Example: sentops register --run-id 3f2a…
    """
    info = _registry(ctx).register(run_id)
    if as_json:
        print_json(info.to_dict())
    else:
        who = plain(info.name, "bold")
        console.print(compose("registered ", who, f" version [bold]{info.version}[/bold] from run ", plain(run_id)))


def promote(
    ctx: typer.Context,
    version: int = typer.Option(..., "--version", help="Model version to point the alias at."),
    alias: str = typer.Option(None, "--alias", help=f"Alias to move ({from_setting('serve.alias')})."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Point an alias at a model version and record the move.

    Example: sentops promote --version 3
    """
    event = _registry(ctx).promote(version, alias)
    if as_json:
        print_json(event.__dict__)
    else:
        frm = "(unset)" if event.from_version is None else f"v{event.from_version}"
        console.print(compose(plain(event.alias), f": {frm} → [bold]v{event.to_version}[/bold]"))


def rollback(
    ctx: typer.Context,
    alias: str = typer.Option(None, "--alias", help=f"Alias to move back ({from_setting('serve.alias')})."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Point an alias back at the version it had before (walks back through history).

    Example: sentops rollback
    """
    event = _registry(ctx).rollback(alias)
    if as_json:
        print_json(event.__dict__)
    else:
        console.print(
            compose(plain(event.alias), f": rolled back v{event.from_version} → [bold]v{event.to_version}[/bold]")
        )


def models(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    history: str = typer.Option(None, "--history", help="Show the move history of this alias instead."),
    last: int = typer.Option(
        None,
        "--last",
        min=0,
        help="With --history: only the last N moves (0 = all; default: all with --json, else 50).",
    ),
) -> None:
    """List model versions with aliases, classes, golden-test accuracy / F1 and lineage.

    A model that does not exist yet (nothing trained and registered under mlflow.model_name)
    is an error (66), like a registry that cannot be reached (69): an empty list means the
    model exists and has no versions.

    Example: sentops models --json; sentops models --history production --last 20
    """
    registry = _registry(ctx)
    if history:
        _print_history(registry, history, last, as_json)
        return
    versions = registry.list_versions()
    if not versions:  # a model that is not there is an error, not an empty list
        _require_model(registry)
    if as_json:
        print_json([{k: v for k, v in info.to_dict().items() if k != "tags"} for info in versions])
        return
    if not versions:
        console.print(plain(f"model {registry.model_name!r} has no versions yet: run `sentops train`"))
        return
    table = Table(title=plain(registry.model_name))
    # these never wrap; the run id is shortened, as git shows a commit (--json has it whole)
    no_wrap = ("version", "aliases", "classes", "golden acc", "golden F1", "run id")
    for col in ("version", "aliases", "classes", "golden acc", "golden F1", "created", "run id", "parent"):
        table.add_column(col, no_wrap=col in no_wrap, overflow="fold")
    for v in versions:
        # every cell is registry data (aliases, tags: anyone who can write to MLflow sets them)
        table.add_row(
            plain(v.version),
            plain(", ".join(v.aliases) or "–"),
            plain(_classes_cell(v.classes)),
            fmt(v.golden_accuracy),
            fmt(v.golden_f1),
            plain(v.created.replace("T", " ")[:16]),
            plain((v.run_id or "–")[:RUN_ID_CHARS]),
            plain(v.parent_version or "–"),
        )
    console.print(table)


def _classes_cell(names: list[str]) -> str:
    """A version's classes in a few characters: the names, else their first three letters
    (neg/neu/pos), else how many (``--json`` lists them whole)."""
    whole = "/".join(names)
    if len(whole) <= CLASSES_CHARS:
        return whole
    short = [n[:3] for n in names]
    if len(set(short)) == len(short) and len("/".join(short)) <= CLASSES_CHARS:
        return "/".join(short)
    return f"{len(names)} classes"


def _require_model(registry: Any) -> None:
    """NotFoundError (exit 66) when the registered model does not exist, with the next step."""
    try:
        registry.registered_model()
    except NotFoundError as exc:
        raise NotFoundError(f"{exc}: train and register one with `sentops train`, or set mlflow.model_name") from exc


def _print_history(registry: Any, alias: str, last: int | None, as_json: bool) -> None:
    """The move history of one alias: a table of the last moves, or all of them as JSON."""
    limit = last if last is not None else (0 if as_json else HISTORY_TABLE_ROWS)
    total, events = registry.history_tail(alias, limit or None)
    if as_json:
        print_json([e.__dict__ for e in events])
        return
    shown = f"last {len(events)} of {total} moves" if len(events) < total else f"{total} moves"
    table = Table(title=plain(f"alias history: {alias} ({shown})"))
    for col in ("at", "action", "from", "to"):
        table.add_column(col)
    for e in events:
        table.add_row(plain(e.at), plain(e.action), plain(e.from_version or "–"), plain(e.to_version))
    console.print(table)
    if len(events) < total:
        console.print(f"{total - len(events)} earlier moves not shown: --last 0 shows all, --json prints all")
