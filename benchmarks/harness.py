"""What every benchmark shares: the ``--home`` / ``--out`` arguments, the record of the
machine (CPU, cores, date, load average before and after, the command) written with each
result, and the child server (``sentiment_ops.demo.server``: a free 127.0.0.1 port, /ready,
stopped by its PID).

A result file holds one benchmark; where one area has several benchmarks, each writes its
own section of the area's file (``write_result(..., section="arena")``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # this tree's sentiment_ops, as the servers it starts run it

from machine import describe as describe_machine  # noqa: E402

from sentiment_ops.demo.server import ServeProcess, free_port, sentops_serve_command  # noqa: E402

__all__ = [
    "RESULTS",
    "ROOT",
    "ServeProcess",
    "command",
    "common_arguments",
    "free_port",
    "load_average",
    "parser",
    "record",
    "sentops_serve_command",
    "write_json",
    "write_result",
]


def parser(
    doc: str | None, out: str | None = None, home: str | None = "", required: bool | None = None, **prog: Any
) -> argparse.ArgumentParser:
    """An argument parser with ``doc`` as its help and ``common_arguments``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, **prog)
    return common_arguments(ap, out, home, required)


def common_arguments(
    ap: argparse.ArgumentParser, out: str | None = None, home: str | None = "", required: bool | None = None
) -> argparse.ArgumentParser:
    """``ap`` with ``--home`` (``home``: its help; ``None``: no ``--home``; ``required``: by
    default, unless the help says "default") and, with ``out`` (a file name in
    benchmarks/results/), ``--out``."""
    if home is not None:
        text = home or "a sentops home with a trained model behind production (copied or read, never written)"
        needed = "default" not in text if required is None else required
        ap.add_argument("--home", type=Path, required=needed, help=text)
    if out is not None:
        ap.add_argument("--out", type=Path, default=RESULTS / out, help="where the JSON goes (default: %(default)s)")
    return ap


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages now: other work on the same cores."""
    return [round(x, 2) for x in os.getloadavg()]


def command(env_prefixes: tuple[str, ...] = ()) -> str:
    """This run's command line, after the environment variables that start with one of
    ``env_prefixes`` (settings that change what is measured, e.g. ``SENTOPS_TRAIN__``)."""
    env = [f"{k}={v}" for k, v in sorted(os.environ.items()) if env_prefixes and k.startswith(env_prefixes)]
    return " ".join([*env, "python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def record(load_before: list[float] | tuple[float, ...], env_prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
    """The machine, the date, the load average before and now, and the command of this run."""
    return {
        "machine": describe_machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": load_average(),
        "command": command(env_prefixes),
    }


def write_result(
    out: Path,
    result: dict[str, Any],
    load_before: list[float] | tuple[float, ...],
    section: str | None = None,
    env_prefixes: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``result`` with ``record(load_before, env_prefixes)`` to ``out``: the whole file, or
    its ``section`` (the file's other sections are kept). Returns what was written for this
    run."""
    result = {**result, **record(load_before, env_prefixes)}
    data: dict[str, Any] = result
    if section is not None:
        data = json.loads(out.read_text()) if out.exists() else {}
        data[section] = result
    write_json(out, data)
    print(f"wrote {out}" + (f" ({section})" if section else ""), file=sys.stderr)
    return result


def write_json(out: Path, data: dict[str, Any]) -> None:
    """``data`` as indented JSON to ``out`` (its folder made)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
