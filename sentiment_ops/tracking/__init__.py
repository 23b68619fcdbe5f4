"""MLflow behind one seam: the only package that imports ``mlflow``.

- ``client``: the client built from the settings, reachability, ``mlflow_errors``.
- ``registry``: ``Registry`` (experiments, run artifacts, versions, aliases) and ``VersionInfo``.
- ``alias_history``: the alias move log kept in registered-model tags.
- ``runs``: ``tracked_run``, ``TrackedRun``, ``LoggedSplit``.
- ``pyfunc``: the logged model (``SentimentPyfunc``) and its artifact layout; ``model_file``:
  the models-from-code file logged with it.
- ``artifacts``: a logged version's int8 graph and tokenizer, read as data (``logged_predictor``).
- ``predictors``: a registered version's predictor (``predictor_for``, ``resolve_version``).
- ``monitoring``: drift checks as metrics of a monitoring run.
- ``spark``: the version and ``spark_udf`` for ``sentops score --spark``.

Names are re-exported lazily: importing this package (as the logged model's code does for
``pyfunc``) loads none of its modules."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentiment_ops.tracking.alias_history import AliasEvent
    from sentiment_ops.tracking.artifacts import download_logged, logged_predictor
    from sentiment_ops.tracking.client import check_reachable, make_client, mlflow_errors
    from sentiment_ops.tracking.predictors import ModelRefusedError, exported_predictor, predictor_for, resolve_version
    from sentiment_ops.tracking.pyfunc import SentimentPyfunc, load_pyfunc, log_model
    from sentiment_ops.tracking.registry import PARENT_TAG, Registry, VersionInfo
    from sentiment_ops.tracking.runs import LoggedSplit, TrackedRun, tracked_run

_EXPORTS = {
    "AliasEvent": "alias_history",
    "download_logged": "artifacts",
    "logged_predictor": "artifacts",
    "check_reachable": "client",
    "make_client": "client",
    "mlflow_errors": "client",
    "ModelRefusedError": "predictors",
    "exported_predictor": "predictors",
    "predictor_for": "predictors",
    "resolve_version": "predictors",
    "SentimentPyfunc": "pyfunc",
    "load_pyfunc": "pyfunc",
    "log_model": "pyfunc",
    "PARENT_TAG": "registry",
    "Registry": "registry",
    "VersionInfo": "registry",
    "LoggedSplit": "runs",
    "TrackedRun": "runs",
    "tracked_run": "runs",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sentiment_ops.tracking' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sentiment_ops.tracking.{module}"), name)


__all__ = [
    "PARENT_TAG",
    "AliasEvent",
    "LoggedSplit",
    "ModelRefusedError",
    "Registry",
    "SentimentPyfunc",
    "TrackedRun",
    "VersionInfo",
    "check_reachable",
    "download_logged",
    "exported_predictor",
    "load_pyfunc",
    "log_model",
    "logged_predictor",
    "make_client",
    "mlflow_errors",
    "predictor_for",
    "resolve_version",
    "tracked_run",
]
