"""``sentops db current | upgrade | prune``: the schema of the inference store, and what it
keeps (``store.retention_days``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sentiment_ops.cli.common import console, print_json, settings_from

if TYPE_CHECKING:
    from sentiment_ops.store import Database

app = typer.Typer(
    help="Where the inference store's schema stands, upgrading it, and pruning old rows.", no_args_is_help=True
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _open(ctx: typer.Context) -> Database:
    """The store's database as it is: not created, its revision not checked."""
    from sentiment_ops.store import Database

    settings = settings_from(ctx)
    return Database(settings.store_url, store_text=settings.store.store_text, create=False)


@app.command()
def current(ctx: typer.Context, *, as_json: JsonFlag = False) -> None:
    """Say which schema revision the inference store is at, and whether it needs an upgrade.

    Example: sentops db current
    """
    from sentiment_ops import migrations

    store = _open(ctx)
    try:
        at = store.schema_revision()
        url = store.display_url
    finally:
        store.close()
    head = migrations.head()
    state = (
        "empty (created on first use)"
        if at is None
        else "up to date"
        if at == head
        else "behind: run `sentops db upgrade`"
        if at in migrations.revisions()
        else "newer than this sentops"
    )
    if as_json:
        print_json({"url": url, "current": at, "head": head, "up_to_date": at == head, "state": state})
    else:
        console.print(f"inference store {url}: schema {at or 'none'}, this sentops needs {head}: {state}")


@app.command()
def upgrade(ctx: typer.Context, *, as_json: JsonFlag = False) -> None:
    """Migrate the inference store to this sentops's schema, keeping every row.

    One transaction, under the store's schema lock (PostgreSQL): replicas that start
    meanwhile wait for it. Stop the drift job first and roll the API replicas after it
    (docs/deploy.md).

    Example: sentops db upgrade
    """
    store = _open(ctx)
    try:
        before, after = store.upgrade_schema()
        url = store.display_url
    finally:
        store.close()
    if as_json:
        print_json({"url": url, "before": before, "after": after, "changed": before != after})
    elif before == after:
        console.print(f"inference store {url} is already at schema {after}")
    elif before is None:
        console.print(f"inference store {url} created at schema {after}")
    else:
        console.print(f"inference store {url} upgraded from schema {before} to {after}")


@app.command()
def prune(
    ctx: typer.Context,
    *,
    days: Annotated[
        int | None,
        typer.Option("--days", min=1, help="Delete what is older than N days (default: store.retention_days)."),
    ] = None,
    include_labeled: Annotated[
        bool,
        typer.Option("--include-labeled", "--include-labelled", help="Delete old labeled predictions too."),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Rows deleted per transaction (default: 5000).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Delete predictions, dead letters and drift checks older than the retention
    (store.retention_days, or --days), keeping labeled predictions unless --include-labeled.

    Runs in short transactions of --batch-size rows, so the API keeps writing meanwhile; run it
    again after a failure to finish. `sentops drift` runs it after each check when
    store.retention_days is set.

    Example: sentops db prune --days 30 --dry-run

    Exit codes: 0 ok · 2 no retention set (store.retention_days or --days) · 70 store error.
    """
    from sentiment_ops.errors import ConfigError
    from sentiment_ops.store import PRUNE_BATCH, using_store

    settings = settings_from(ctx)
    days = days if days is not None else settings.store.retention_days
    if days is None:
        raise ConfigError("no retention set: pass --days N or set store.retention_days")
    with using_store(settings) as store:
        batch = batch_size or PRUNE_BATCH
        result = store.prune(days, include_labeled=include_labeled, dry_run=dry_run, batch_size=batch)
        url = store.display_url
    if as_json:
        print_json({"url": url} | result.to_dict())
        return
    verb = "would delete" if dry_run else "deleted"
    kept = "" if include_labeled else f"; {result.labeled_kept} older labeled predictions kept"
    console.print(
        f"inference store {url}: {verb} {result.predictions} predictions, {result.dead_letters} dead letters "
        f"and {result.drift_checks} drift checks older than {days} days "
        f"(before {result.before:%Y-%m-%d %H:%M} UTC){kept}",
        highlight=False,
    )
