"""sentiment_ops: train, track, register, serve, monitor and retrain a transformer
sentiment classifier on your own machines, with MLflow as the system of record.

The public surface is re-exported here; the ``sentops`` CLI is built on it.

Importing the package imports nothing beyond the standard library: the settings (pydantic,
YAML) load on first use. A logged model carries this package as code and imports it
where only MLflow, torch and transformers are installed (``tracking.pyfunc``,
``tracking.model_file``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from sentiment_ops.errors import (
    ConfigError,
    DataError,
    GateFailedError,
    ModelLoadError,
    NotEnoughDataError,
    NotFoundError,
    RegistryUnavailableError,
    SentopsError,
    StoreError,
)

if TYPE_CHECKING:
    from sentiment_ops.config import Settings, load_settings

_LAZY = {"Settings", "load_settings"}  # from sentiment_ops.config


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from sentiment_ops import config

        return getattr(config, name)
    raise AttributeError(f"module 'sentiment_ops' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "DataError",
    "GateFailedError",
    "ModelLoadError",
    "NotEnoughDataError",
    "NotFoundError",
    "RegistryUnavailableError",
    "SentopsError",
    "Settings",
    "StoreError",
    "__version__",
    "load_settings",
]
