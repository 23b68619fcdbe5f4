"""Data the CLI shows is plain text: Rich markup in it is shown as written, never run, and
control characters never reach the terminal raw (``sentiment_ops.cli.display``)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("x[/bold].csv", "x[/bold].csv: no such file"),
        ("[link=https://evil.example]x[/link].csv", "[link=https://evil.example]x[/link].csv: no such file"),
        ("\x1b[31mred\x07.csv", "\\x1b[31mred\\x07.csv: no such file"),
    ],
)
def test_error_lines_show_data_as_plain_text(cli, tmp_path: Path, name: str, shown: str) -> None:  # type: ignore[no-untyped-def]
    """A message quoting data (here a file name) is one plain line: no markup, no raw controls."""
    result = cli("feedback", "import", str(tmp_path / name))
    assert result.exit_code == 65, result.output
    assert f"Error: {tmp_path / shown}" in result.stderr.replace("\n", "")
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr


def test_a_terminal_gets_no_markup_link_or_raw_control_from_data() -> None:
    from sentiment_ops.cli.display import compose, plain

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=200)
    console.print(compose("[bold]ours[/bold] ", plain("[link=https://evil.example]x[/link] [/bold] \x1b[2J \x9b2J")))
    text = out.getvalue()
    assert "[link=https://evil.example]x[/link] [/bold]" in text and "\x1b]8;" not in text  # no OSC 8 hyperlink
    assert "\\x1b[2J \\x9b2J" in text and "\x1b[2J" not in text and "\x9b" not in text
    assert "\x1b[1mours" in text  # our own markup still styles


def test_print_json_escapes_c1_controls_and_keeps_the_data(capsys: pytest.CaptureFixture[str]) -> None:
    from sentiment_ops.cli.common import print_json

    data = {"text": "a \x9b31m CSI, a \x7f DEL, an \x1b ESC, é and [/bold]"}
    print_json(data)
    printed = capsys.readouterr().out
    assert "\x9b" not in printed and "\x7f" not in printed and "\x1b" not in printed
    assert "\\u009b" in printed and "é" in printed and json.loads(printed) == data
