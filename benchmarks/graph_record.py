"""What the graph-alone benchmarks share (``batch_bound.py``, ``onnx_arena.py``,
``export_graph.py``, ``int8_variants.py``): the logged int8 graph of a version, and the JSON record with the
machine, the load average before and after, the date and the command."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from machine import describe as describe_machine

from sentiment_ops.config import Settings
from sentiment_ops.inference.onnx import OnnxPredictor
from sentiment_ops.scoring import OnnxFiles
from sentiment_ops.tracking.artifacts import download_logged
from sentiment_ops.tracking.registry import Registry


def logged_graph(settings: Settings, version: int, tmp: tempfile.TemporaryDirectory[str]) -> tuple[Path, OnnxPredictor]:
    """The int8 graph logged with ``version`` (downloaded into ``tmp``) and a one-thread
    predictor over it that encodes as the server does."""
    found = download_logged(Registry(settings).download_uri(version), Path(tmp.name))
    if found is None:
        raise SystemExit(f"version {version} was logged without its int8 graph")
    return found[1], OnnxFiles(found[0], found[1], settings.serve.max_length, 1).build()


def write_record(out: Path, result: dict[str, Any], load_before: tuple[float, float, float]) -> None:
    """``result`` with the machine, the load before and now, the date and the command, to ``out``."""
    script = Path(sys.argv[0]).name
    result.update(
        {
            "machine": describe_machine(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": f"python benchmarks/{script} " + " ".join(sys.argv[1:]),
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
