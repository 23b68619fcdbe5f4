"""``sentops config``: show the resolved settings (credentials masked)."""

from __future__ import annotations

import typer
import yaml

from sentiment_ops.cli.common import console, print_json, settings_from
from sentiment_ops.redaction import redact_value

app = typer.Typer(help="Inspect settings.", no_args_is_help=True)


@app.command("show")
def show(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the resolved settings (defaults < config file < SENTOPS_* env < flags), with
    the passwords of URLs shown as ***.

    Example: SENTOPS_TRAIN__EPOCHS=2 sentops config show
    """
    settings = settings_from(ctx)
    data = settings.to_dict()
    data["resolved"] = {
        "tracking_uri": settings.tracking_uri,
        "registry_uri": settings.registry_uri,
        "store_url": settings.store_url,
    }
    data = redact_value(data)
    if as_json:
        print_json(data)
    else:
        console.print(yaml.safe_dump(data, sort_keys=False), end="", highlight=False, markup=False)  # values are data
