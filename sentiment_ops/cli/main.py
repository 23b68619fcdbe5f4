"""Entry point of ``sentops``. Settings load late, inside each command: ``--help`` works
with nothing configured, and importing this module loads no model."""

from __future__ import annotations

from pathlib import Path

import typer

from sentiment_ops import __version__
from sentiment_ops.cli import (
    config_cmd,
    db_cmd,
    demo_cmd,
    drift_cmd,
    feedback_cmd,
    registry_cmds,
    retrain_cmd,
    score_cmd,
    serve_cmd,
    train_cmd,
)
from sentiment_ops.cli.common import SentopsGroup

EPILOG = (
    "Exit codes: 0 ok · 1 error · 2 usage or invalid setting · 3 drift detected · "
    "4 not enough data · 5 gate failed · 65 bad data · 66 not found · 69 registry unreachable · "
    "70 store error · 71 model cannot be loaded"
)

app = typer.Typer(
    name="sentops",
    cls=SentopsGroup,
    help="Train, track, register, serve, monitor and retrain a sentiment classifier.",
    epilog=EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion, --show-completion [bash|zsh|fish|pwsh]
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sentops {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config: Path = typer.Option(
        None,
        "--config",
        "-c",
        envvar="SENTOPS_CONFIG",
        help="YAML settings file, for any command: sentops -c FILE COMMAND.",
    ),
    home: Path = typer.Option(None, "--home", help="Sentops home folder (env SENTOPS_HOME)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """sentops: the whole life of a transformer sentiment classifier, on your own machines."""
    ctx.obj = {"config": config, "overrides": {"home": home}, "verbose": verbose}


app.add_typer(config_cmd.app, name="config")
app.add_typer(feedback_cmd.app, name="feedback")
app.add_typer(db_cmd.app, name="db")
app.command()(train_cmd.train)
app.command()(registry_cmds.register)
app.command()(registry_cmds.promote)
app.command()(registry_cmds.rollback)
app.command()(registry_cmds.models)
app.command()(serve_cmd.serve)
app.command("embed-reference")(drift_cmd.embed_reference)
app.command()(drift_cmd.drift)
app.command()(demo_cmd.demo)
app.command()(retrain_cmd.retrain)
app.command()(score_cmd.score)


def run() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    run()
