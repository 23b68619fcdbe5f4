"""The README's CLI reference is generated from the live CLI; a stale one fails here. The
exit codes the docs and the CLI help list are those of sentiment_ops/errors.py."""

from __future__ import annotations

import re
from pathlib import Path

from sentiment_ops import errors
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


# -- exit codes: docs/drift.md, `sentops --help` and `sentops drift --help` vs errors.py ----
def _error_classes() -> dict[str, type[errors.SentopsError]]:
    found: dict[str, type[errors.SentopsError]] = {}
    todo: list[type[errors.SentopsError]] = [errors.SentopsError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def _all_exit_codes() -> set[int]:
    return {errors.EXIT_OK, errors.EXIT_DRIFT} | {c.exit_code for c in _error_classes().values()}


def _drift_doc_table() -> list[tuple[int, str, str]]:
    """(code, error class or "", meaning) of each row of docs/drift.md § Exit codes."""
    text = (ROOT / "docs" / "drift.md").read_text()
    section = text[text.index("## Exit codes\n") :]
    section = section[: section.index("\n## ", 1)]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].isdigit():
            assert len(cells) == 3, line
            rows.append((int(cells[0]), cells[1].strip("`"), cells[2]))
    return rows


def _codes_in(text: str) -> list[int]:
    """The codes of an ``Exit codes: 0 ok · 1 error · …`` line."""
    text = " ".join(text[text.index("Exit codes:") + len("Exit codes:") :].split())
    return [int(m.group(1)) for m in re.finditer(r"(?:^|·)\s*(\d+)\s", text)]


def test_drift_doc_exit_codes_match_errors_py() -> None:
    rows = _drift_doc_table()
    codes = [code for code, _, _ in rows]
    assert len(codes) == len(set(codes)), codes
    assert set(codes) == _all_exit_codes()
    classes = _error_classes()
    for code, name, _ in rows:
        if name:
            assert name in classes, f"docs/drift.md names {name}, which errors.py does not define"
            assert classes[name].exit_code == code, (name, code, classes[name].exit_code)
        else:
            assert code in (errors.EXIT_OK, errors.EXIT_DRIFT), f"exit {code} needs its error class"
    named = {name for _, name, _ in rows}
    # every class that sets its own exit code is named in the table
    own = {n for n, c in classes.items() if "exit_code" in vars(c)}
    assert own <= named, own - named


def test_cli_epilog_exit_codes_match_errors_py() -> None:
    from sentiment_ops.cli.main import EPILOG

    codes = _codes_in(EPILOG)
    assert len(codes) == len(set(codes)), codes
    assert set(codes) == _all_exit_codes()


def test_drift_help_exit_codes_match_the_doc() -> None:
    """`sentops drift --help` lists the codes the doc's table says drift can exit with."""
    from sentiment_ops.cli.drift_cmd import drift

    possible = {code for code, _, meaning in _drift_doc_table() if not meaning.startswith("never")}
    assert set(_codes_in(drift.__doc__ or "")) == possible


def test_architecture_lists_every_module() -> None:
    """docs/architecture.md draws the layout one line per module: a new module (or a
    removed one) shows up here until the drawing follows."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    drawing = text[text.index("    sentiment_ops/\n") : text.index("Data flow:")]
    listed: set[str] = set()
    folder: list[str] = []
    for line in drawing.splitlines()[1:]:
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip()) - 6) // 2
        name = line.split()[0]
        folder = folder[:depth]
        if name.endswith("/"):
            folder.append(name.rstrip("/"))
            listed.add("/".join(folder))
        else:
            listed.add("/".join([*folder, name]))
    package = ROOT / "sentiment_ops"
    modules = {
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.parts[-2] not in ("versions",) and "migrations" not in p.parts and "cli" not in p.parts
    }
    modules |= {"migrations", "cli"}
    listed |= {f"{f}/__init__.py" for f in listed if (package / f / "__init__.py").exists()}  # the folder's line
    assert modules - listed == set(), f"not in docs/architecture.md: {sorted(modules - listed)}"
    gone = sorted(name for name in listed if not (package / name).exists())
    assert not gone, f"in docs/architecture.md but not in the package: {gone}"
