"""Options with a fixed set of values, as enums: ``--help`` lists the choices and a wrong
value exits 2 with the list. The library keeps taking plain strings (the settings'
``Literal`` fields): commands pass ``value(option)`` on. tests/test_cli_conventions.py
keeps these equal to the settings' literals."""

from __future__ import annotations

from enum import StrEnum


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


class DriftSource(StrEnum):
    """Whose predictions a drift check reads: served (api) or batch-scored (batch)."""

    api = "api"
    batch = "batch"


class LogFormat(StrEnum):
    """``serve.log_format``: plain text lines, or one JSON object per line."""

    text = "text"
    json = "json"


class ScoreEngine(StrEnum):
    """Where ``sentops score`` runs: this machine's cores, or a Spark job."""

    local = "local"
    spark = "spark"


def value(choice: StrEnum | None) -> str | None:
    """The plain string the library and the settings take (None stays None: the setting decides)."""
    return None if choice is None else choice.value
