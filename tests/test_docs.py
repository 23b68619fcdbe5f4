"""The README's CLI reference is generated from the live CLI; a stale one fails here."""

from __future__ import annotations

from pathlib import Path

from sentiment_ops.cli.docgen import END, START, render

ROOT = Path(__file__).resolve().parents[1]


def test_readme_cli_reference_is_current() -> None:
    text = (ROOT / "README.md").read_text()
    block = text[text.index(START) : text.index(END) + len(END)] + "\n"
    assert block == render(), "README CLI reference is stale: run `make docs`"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "```bash\nmake test\n```" in readme
    assert "make test" in ci
