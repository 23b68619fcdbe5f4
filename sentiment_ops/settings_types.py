"""The value types of the settings (``sentiment_ops.config``): the choice enums and durations.

Plain Python (no pydantic, no files): ``config`` builds its models on them and re-exports
them, and the CLI's options take the same enums (``cli/choices.py``).
"""

from __future__ import annotations

import re
from enum import StrEnum

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``30d``, ``1h``, ``90m`` or ``1h30m``; ValueError if not one."""
    parts = re.fullmatch(r"\s*((\d+(\.\d+)?)\s*[smhdw]\s*)+", text or "")
    if not parts:
        raise ValueError(f"not a duration: {text!r} (e.g. 30d, 1h, 90m)")
    total = sum(float(v) * _UNITS[u] for v, _, u in re.findall(r"(\d+(\.\d+)?)\s*([smhdw])", text))
    if total <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return total


# Settings with a fixed set of values. The CLI's options take these same enums
# (cli/choices.py), so --help lists the choices and a wrong value exits 2 with the list.
class Device(StrEnum):
    """``train.device``."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Backend(StrEnum):
    """``serve.backend``: ONNX Runtime int8 or the fp32 torch model."""

    torch = "torch"
    onnx = "onnx"


class DriftMethod(StrEnum):
    """``drift.method``: what decides the drift status."""

    calibrated = "calibrated"
    mmd_nn = "mmd_nn"
    mmd = "mmd"
    cosine = "cosine"


class LogFormat(StrEnum):
    """``serve.log_format``: plain text lines, or one JSON object per line."""

    text = "text"
    json = "json"
