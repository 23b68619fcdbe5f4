"""Shared pieces of the CLI: settings from the context, consoles, error mapping."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

from sentiment_ops.cli.display import compose, json_controls_escaped, json_text, plain
from sentiment_ops.config import Settings, load_settings
from sentiment_ops.errors import SentopsError
from sentiment_ops.redaction import install_log_redaction, redact

# `sentops train --config` and `sentops serve --config/-c` came before the global option and
# still work, hidden: `sentops --config FILE <command>` is the one documented spelling.
LEGACY_CONFIG_HELP = "YAML settings file: same as the global --config/-c (kept for old scripts)."

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


LIST_ITEM = ("- ", "* ", "• ")


def reflow(text: str | None) -> str | None:
    """Help text with one line per paragraph (and per list item): docstrings wrap at the
    source's line length, the terminal wraps at its own width, and typer keeps the
    docstring's line breaks, which then fall in mid-sentence. A paragraph that starts with
    ``\\b`` (click's "do not rewrap" marker) is kept as written."""
    if not text:
        return text
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        if paragraph.startswith("\b"):
            paragraphs.append(paragraph)
            continue
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not line.lstrip().startswith(LIST_ITEM):
                lines[-1] = f"{lines[-1]} {line.strip()}"
            else:
                lines.append(line.strip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _no_flag_values(params: list[Any]) -> None:
    """A flag takes no value: no `<bool>` after it in --help."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


def _reflow_all(command: Any) -> None:
    command.help = reflow(command.help)
    help_option = command.get_help_option(typer.Context(command))  # made once per command, kept
    _no_flag_values([*command.params, *([help_option] if help_option is not None else [])])
    for sub in getattr(command, "commands", {}).values():
        _reflow_all(sub)


class SentopsGroup(TyperGroup):
    """The root group: maps every ``SentopsError`` to one red line on stderr (credentials
    masked) and its exit code, and reflows every command's help text (``reflow``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _reflow_all(self)

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)
        _no_flag_values(params)  # the completion options are added after __init__
        return params

    def invoke(self, ctx: Any) -> Any:  # typer vendors click: its Context is not click.Context
        try:
            return super().invoke(ctx)
        except SentopsError as exc:
            message = redact(" ".join(str(exc).split()))  # may quote data: plain text, controls made visible
            err_console.print(compose("[bold red]Error:[/bold red] ", plain(message)), highlight=False)
            raise typer.Exit(exc.exit_code) from None


def quiet_third_party(verbose: bool = False) -> None:
    """Keep the terminal for our own output: no library progress bars or load reports."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if verbose else "WARNING")
    # With a tracking server MLflow writes "View run … at: URL" to stdout, breaking --json.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()  # log lines quote URLs (httpx, SQLAlchemy, MLflow): mask their passwords
    for name in ("mlflow", "transformers", "alembic", "httpx", "urllib3", "datasets"):
        logging.getLogger(name).setLevel(level if verbose else logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def settings_from(ctx: typer.Context, overrides: Mapping[str, Any] | None = None) -> Settings:
    obj = ctx.find_root().obj or {}
    merged = dict(obj.get("overrides", {}))
    merged.update(overrides or {})
    settings = load_settings(obj.get("config"), merged)
    quiet_third_party(bool(obj.get("verbose")))
    return settings


@functools.cache
def _defaults() -> Settings:
    return Settings()


def default_of(dotted: str) -> str:
    """The built-in default of the setting ``dotted`` (``retrain.epochs``) as help text shows
    it, read from the settings model so that help never repeats a value of its own."""
    node: Any = _defaults()
    for part in dotted.split("."):
        node = getattr(node, part)
    if node is None:
        return "none"
    return f"{node:g}" if isinstance(node, float) else str(node)


def from_setting(dotted: str) -> str:
    """``default: <setting> setting, <its default>``, for a flag that overrides a setting."""
    return f"default: {dotted} setting, {default_of(dotted)}"


def print_json(data: Any) -> None:
    text = json_controls_escaped(json.dumps(data, default=str, indent=2, ensure_ascii=False))
    if console.is_terminal and len(text) < 100_000:
        console.print(json_text(text), soft_wrap=True)  # highlighted for people
    else:  # scripts and long output: rich's highlighter takes seconds on megabytes of JSON
        sys.stdout.write(text + "\n")


@contextmanager
def stage_progress(enabled: bool = True) -> Iterator[Any]:
    """A rich progress display driven by ``progress(stage, done, total)`` callbacks."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    tasks: dict[str, Any] = {}
    with Progress(
        TextColumn("[bold]{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as bar:

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))

        yield update


def fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"
