"""sentiment_ops: train, track, register, serve, monitor and retrain a transformer
sentiment classifier on your own machines, with MLflow as the system of record.

The public surface is re-exported here; the ``sentops`` CLI is built on it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from sentiment_ops.config import Settings, load_settings
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
