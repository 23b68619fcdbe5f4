"""Options with a fixed set of values, as enums: ``--help`` lists the choices and a wrong
value exits 2 with the list. The settings' choices are defined once, in ``config``, and
used here as they are; the others are the CLI's own."""

from __future__ import annotations

from enum import StrEnum

from sentiment_ops.config import Backend, Device, DriftMethod, LogFormat

__all__ = ["Backend", "Device", "DriftMethod", "DriftSource", "LogFormat", "ScoreEngine", "value"]


class DriftSource(StrEnum):
    """Whose predictions a drift check reads: served (api) or batch-scored (batch)."""

    api = "api"
    batch = "batch"


class ScoreEngine(StrEnum):
    """Where ``sentops score`` runs: this machine's cores, or a Spark job."""

    local = "local"
    spark = "spark"


def value(choice: StrEnum | None) -> str | None:
    """The plain string the library and the settings take (None stays None: the setting decides)."""
    return None if choice is None else choice.value
