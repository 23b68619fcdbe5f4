"""CLI conventions, read back from the real ``sentops`` app as a user runs it: shell
completion, enum options, help text without mid-sentence line breaks, one global
``--config``/``-c``, ``--alias`` defaults from the settings, and ``sentops models``
reporting a real error instead of an empty list."""

from __future__ import annotations

import json
import socket
from enum import Enum
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from sentiment_ops.cli import choices
from sentiment_ops.cli.main import EPILOG, app
from sentiment_ops.config import DriftSettings, ServeSettings, TrainSettings, load_settings
from sentiment_ops.errors import NotFoundError, RegistryUnavailableError
from sentiment_ops.labeling import Strategy

runner = CliRunner()
LIST_ITEM = ("- ", "* ", "• ")


def sentops(*args: str, **env: str) -> Any:
    """``sentops ARGS`` through the real app, under the console script's name."""
    return runner.invoke(app, list(args), prog_name="sentops", env=env or None)


def _commands(cmd: Any = None, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command of the live app (groups included) with its path."""
    cmd = cmd or typer.main.get_command(app)
    found = [(path, cmd)]
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        found.extend(_commands(sub, (*path, name)))
    return found


COMMANDS = [path for path, _ in _commands()]


def _command(path: tuple[str, ...]) -> Any:
    return dict(_commands())[path]


# -- shell completion ------------------------------------------------------------------------
def test_help_offers_completion() -> None:
    result = sentops("--help")
    assert result.exit_code == 0
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout


def test_show_completion_prints_a_bash_script(monkeypatch: pytest.MonkeyPatch) -> None:
    # typer's own switch from "detect the shell running me" to "--show-completion SHELL",
    # so the test does not depend on the shell that started pytest
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = sentops("--show-completion", "bash")
    assert result.exit_code == 0, result.output
    assert "_SENTOPS_COMPLETE=complete_bash" in result.stdout
    assert "complete -o default -F _sentops_completion sentops" in result.stdout


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("sentops dri", ["drift"]),
        ("sentops serve --back", ["--backend"]),
        ("sentops serve --backend ", ["torch", "onnx"]),
        ("sentops drift --method ", ["calibrated", "mmd_nn", "mmd", "cosine"]),
    ],
)
def test_the_completion_script_completes(words: str, expected: list[str]) -> None:
    """What the installed script asks the program (COMP_WORDS / COMP_CWORD) answers with
    commands, options and an enum option's choices."""
    cword = str(len(words.split()) - (0 if words.endswith(" ") else 1))
    result = sentops(_SENTOPS_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=cword)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == expected


# -- options with a fixed set of values --------------------------------------------------------
ENUM_OPTIONS = {
    (("train",), "--device"): choices.Device,
    (("serve",), "--backend"): choices.Backend,
    (("serve",), "--log-format"): choices.LogFormat,
    (("embed-reference",), "--backend"): choices.Backend,
    (("drift",), "--method"): choices.DriftMethod,
    (("drift",), "--source"): choices.DriftSource,
    (("score",), "--backend"): choices.Backend,
    (("score",), "--engine"): choices.ScoreEngine,
    (("feedback", "export"), "--select"): Strategy,
    (("demo",), "--labels-from"): Strategy,
}


def _enum_options() -> dict[tuple[tuple[str, ...], str], type[Enum]]:
    found = {}
    for path, cmd in _commands():
        for p in getattr(cmd, "params", []):
            annotation = getattr(getattr(p, "type_descriptor", None), "annotation", None)
            if isinstance(annotation, type) and issubclass(annotation, Enum):
                found[(path, p.opts[0])] = annotation
    return found


def test_every_enum_option_is_checked_here() -> None:
    assert _enum_options() == ENUM_OPTIONS


@pytest.mark.parametrize(("path", "option"), list(ENUM_OPTIONS))
def test_a_wrong_choice_exits_2_with_the_list(path: tuple[str, ...], option: str) -> None:
    values = [m.value for m in ENUM_OPTIONS[(path, option)]]
    help_text = sentops(*path, "--help", COLUMNS="200").stdout
    assert "|".join(values) in help_text  # the choices, in the option's metavar

    result = sentops(*path, option, "no-such-choice")
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.replace("│", " ").split())
    assert f"Invalid value for '{option}'" in message
    assert "'no-such-choice' is not one of " + ", ".join(f"'{v}'" for v in values) in message


@pytest.mark.parametrize(
    ("enum", "field"),
    [
        (choices.Device, TrainSettings.model_fields["device"]),
        (choices.Backend, ServeSettings.model_fields["backend"]),
        (choices.LogFormat, ServeSettings.model_fields["log_format"]),
        (choices.DriftMethod, DriftSettings.model_fields["method"]),
    ],
)
def test_enums_are_the_settings_own(enum: type[Enum], field: Any) -> None:
    """An option with a setting takes the setting's own type: the choices are defined once."""
    assert field.annotation is enum


def test_enum_settings_hold_plain_strings() -> None:
    """Settings keep the plain value the library compares, logs and hashes (defaults too)."""
    settings = load_settings(None, {"serve.backend": "torch"}, environ={})
    values = (settings.serve.backend, settings.train.device, settings.drift.method, settings.serve.log_format)
    assert values == ("torch", "auto", "calibrated", "text") and all(type(v) is str for v in values)


def test_config_file_values_still_work(tmp_path: Path) -> None:
    """The setting stays a plain string a YAML file sets (and validates)."""
    good = tmp_path / "good.yaml"
    good.write_text("serve:\n  backend: torch\ndrift:\n  method: cosine\ntrain:\n  device: cpu\n")
    data = json.loads(sentops("-c", str(good), "config", "show", "--json").stdout)
    assert (data["serve"]["backend"], data["drift"]["method"], data["train"]["device"]) == ("torch", "cosine", "cpu")
    bad = tmp_path / "bad.yaml"
    bad.write_text("serve:\n  backend: tensorflow\n")
    result = sentops("-c", str(bad), "config", "show")
    assert result.exit_code == 2 and "serve.backend" in result.stderr


# -- help text ---------------------------------------------------------------------------------
def _prose(help_text: str) -> list[str]:
    """The description of a --help page: between the usage line and the first panel."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Usage:")) + 1
    end = next((i for i, line in enumerate(lines) if line.lstrip().startswith("╭")), len(lines))
    return [line.rstrip() for line in lines[start:end]]


def _panel(help_text: str, title: str) -> list[str]:
    """The rows of a --help panel (``╭─ Commands ─…╮ … ╰─…╯``)."""
    rows: list[str] = []
    inside = False
    for line in help_text.splitlines():
        if line.startswith(f"╭─ {title} "):
            inside = True
        elif inside and line.startswith("╰"):
            break
        elif inside:
            rows.append(line)
    return rows


def _breaks(lines: list[str], width: int) -> list[tuple[str, str]]:
    """Line breaks inside a paragraph that the terminal's wrapping did not make: the next
    line's first word would have fit on the line (list items start their own line)."""
    found = []
    for a, b in pairwise(lines):
        if not a.strip() or not b.strip() or b.strip().startswith(LIST_ITEM):
            continue
        if len(a) + 1 + len(b.split()[0]) <= width - 2:  # typer pads the page by one column each side
            found.append((a.strip(), b.strip()))
    return found


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "sentops")
def test_help_has_no_line_break_in_mid_sentence(path: tuple[str, ...]) -> None:
    for width in (100, 400):  # a terminal; one so wide that nothing needs wrapping
        result = sentops(*path, "--help", COLUMNS=str(width))
        assert result.exit_code == 0, result.output
        assert _breaks(_prose(result.stdout), width) == [], (width, result.stdout)
    # at 400 columns each command of a group's list is one row: no summary broken in two
    rows = _panel(result.stdout, "Commands")
    assert bool(rows) == hasattr(_command(path), "commands")
    assert all(not row[2:4].isspace() for row in rows), result.stdout


def test_the_check_finds_a_docstring_break() -> None:
    """The rule above flags a break the source made, not one the terminal made."""
    page = "\n".join(
        [
            " Usage: sentops thing",
            "",
            " Run the whole loop: train → promote → serve → IMDB traffic (no drift)",
            " → tweet traffic (drift) → labels.",
            " - a list item starts its own line",
            "╭─ Options ─╮",
        ]
    )
    assert _breaks(_prose(page), 100) == [
        ("Run the whole loop: train → promote → serve → IMDB traffic (no drift)", "→ tweet traffic (drift) → labels.")
    ]
    assert _breaks(_prose(page), 60) == []


# -- one --config, --alias from the settings -------------------------------------------------
def test_config_is_one_global_option() -> None:
    root_opts = [o for p in typer.main.get_command(app).params for o in p.opts]
    assert "--config" in root_opts and "-c" in root_opts
    for path, cmd in _commands():
        if path:
            visible = [o for p in getattr(cmd, "params", []) if not getattr(p, "hidden", False) for o in p.opts]
            assert "--config" not in visible and "-c" not in visible, path


def test_dash_c_is_honoured_by_a_subcommand(tmp_path: Path) -> None:
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("serve:\n  alias: staging\n  port: 8123\nmlflow:\n  model_name: reviews\n")
    data = json.loads(sentops("-c", str(cfg), "config", "show", "--json").stdout)
    assert (data["serve"]["alias"], data["serve"]["port"], data["mlflow"]["model_name"]) == ("staging", 8123, "reviews")
    # the alias a command uses without --alias is the file's serve.alias
    for args in (("embed-reference",), ("drift",)):
        result = sentops("-c", str(cfg), *args)
        assert result.exit_code == NotFoundError.exit_code, result.output
        assert "alias 'staging' of model 'reviews' is not set" in result.stderr, result.stderr


def test_the_old_per_command_config_still_works(tmp_path: Path) -> None:
    """``sentops train --config FILE`` (hidden now) is still read: its bad key is reported."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  lerning_rate: 0.1\n")
    result = sentops("train", "--config", str(cfg))
    assert result.exit_code == 2
    assert "unknown setting 'train.lerning_rate'" in result.stderr


# -- sentops models --------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_models_with_the_registry_unreachable_is_an_error() -> None:
    code = RegistryUnavailableError.exit_code
    assert f"{code} registry unreachable" in EPILOG  # the documented code
    for args in (("models",), ("models", "--json")):
        result = sentops(*args, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{_closed_port()}")
        assert result.exit_code == code, result.output
        assert "no versions" not in result.output
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1 and "unreachable" in result.stderr


def test_models_of_a_model_that_does_not_exist_is_an_error() -> None:
    result = sentops("models")
    assert result.exit_code == NotFoundError.exit_code, result.output
    assert "no versions" not in result.output and result.stdout == ""
    assert result.stderr.startswith("Error: registered model 'sentiment-classifier' does not exist")
    assert "sentops train" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_models_of_an_existing_empty_model_says_no_versions() -> None:
    from sentiment_ops.tracking.registry import Registry

    Registry(load_settings()).client.create_registered_model("sentiment-classifier")
    result = sentops("models")
    assert result.exit_code == 0, result.output
    assert "model 'sentiment-classifier' has no versions yet" in result.stdout
    assert json.loads(sentops("models", "--json").stdout) == []


@pytest.mark.parametrize("path", [p for p, _ in _commands()], ids=lambda p: " ".join(p) or "sentops")
def test_flags_show_no_value_in_help(path: tuple[str, ...]) -> None:
    # `--json <bool>` reads as if the flag took a value
    result = sentops(*path, "--help", COLUMNS="200")
    assert result.exit_code == 0
    assert "<bool>" not in result.stdout
