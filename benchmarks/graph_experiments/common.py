"""What the graph experiments share: where they write and the logged int8 graph."""

from __future__ import annotations

import tempfile
from pathlib import Path

from harness import RESULTS

from sentiment_ops.config import Settings
from sentiment_ops.inference.onnx import OnnxPredictor
from sentiment_ops.scoring import OnnxFiles
from sentiment_ops.tracking.artifacts import download_logged
from sentiment_ops.tracking.registry import Registry

OUT = RESULTS / "graph.json"  # each experiment writes its section
PASS_TOKENS = 256  # export and int8: the serving ceiling's best pass on one thread


def logged_graph(settings: Settings, version: int, tmp: tempfile.TemporaryDirectory[str]) -> tuple[Path, OnnxPredictor]:
    """The int8 graph logged with ``version`` (downloaded into ``tmp``) and a one-thread
    predictor over it that encodes as the server does."""
    found = download_logged(Registry(settings).download_uri(version), Path(tmp.name))
    if found is None:
        raise SystemExit(f"version {version} was logged without its int8 graph")
    return found[1], OnnxFiles(found[0], found[1], settings.serve.max_length, 1).build()
