"""``sentops db current | upgrade``: the schema of the inference store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sentiment_ops.cli.common import console, print_json, settings_from

if TYPE_CHECKING:
    from sentiment_ops.store import Database

app = typer.Typer(help="Where the inference store's schema stands, and upgrading it.", no_args_is_help=True)

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
