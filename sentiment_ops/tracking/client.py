"""The connection to MLflow: quiet client settings, the reachability probe, the client
built from the settings, MLflow's errors as ``SentopsError`` subclasses, and the one scoped
use of MLflow's global tracking URI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from sentiment_ops.errors import NotFoundError, RegistryUnavailableError, SentopsError
from sentiment_ops.paths import sqlite_file, writable_dir
from sentiment_ops.redaction import redact

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from sentiment_ops.config import Settings

NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def quiet_mlflow() -> None:
    # A down tracking server must fail in seconds, not after minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def check_reachable(uri: str, timeout_s: float) -> None:
    """For http(s) tracking URIs, ask the server's /health before doing anything."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    import httpx

    try:
        resp = httpx.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise RegistryUnavailableError(f"MLflow tracking server {redact(uri)} is unreachable: {exc}") from exc
    if resp.status_code >= 500:
        raise RegistryUnavailableError(f"MLflow tracking server {redact(uri)} answered {resp.status_code} on /health")


def make_client(settings: Settings, check: bool = True) -> MlflowClient:
    """The ``MlflowClient`` of the settings' tracking and registry URIs, after ``check_stores``."""
    check_stores(settings, check)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)


def check_stores(settings: Settings, check: bool = True) -> None:
    """A SQLite file's folder must be writable (one line naming it, not SQLite's "unable to
    open"), and with ``check`` an http(s) server must answer its /health."""
    quiet_mlflow()
    tracking_uri = settings.tracking_uri
    for uri in {tracking_uri, settings.registry_uri}:
        db_file = sqlite_file(uri)
        if db_file is not None:
            writable_dir(db_file.parent, "sentops home" if db_file.parent == settings.home else "MLflow folder")
    if check:
        check_reachable(tracking_uri, settings.mlflow.timeout_s)
        if settings.registry_uri != tracking_uri:
            check_reachable(settings.registry_uri, settings.mlflow.timeout_s)


def is_not_found(exc: BaseException) -> bool:
    """True for an MLflow error that says the resource does not exist."""
    return getattr(exc, "error_code", "") in NOT_FOUND_CODES


@contextmanager
def mlflow_errors(what: str) -> Iterator[None]:
    """Turn MLflow's exceptions into SentopsError subclasses with one clear line."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except SentopsError:
        raise
    except MlflowException as exc:
        msg = str(exc.message if hasattr(exc, "message") else exc).splitlines()[0]
        if is_not_found(exc) or "not found" in msg.lower():
            raise NotFoundError(f"{what}: {msg}") from exc
        if "connection" in msg.lower() or "max retries" in msg.lower():
            raise RegistryUnavailableError(f"{what}: MLflow is unreachable: {msg}") from exc
        raise SentopsError(f"{what}: {msg}") from exc
    except (ConnectionError, OSError) as exc:
        raise RegistryUnavailableError(f"{what}: MLflow is unreachable: {exc}") from exc


@contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking URI at ``uri`` for one call, then restore it.

    MLflow 3.17 reads the global tracking URI, with no argument to replace it, in two calls
    sentops makes: ``Model.log`` (behind ``mlflow.pyfunc.log_model``: ``_resolve_tracking_uri()``
    and ``finalize_logged_model``), and the SQL registry store's ``create_model_version``,
    which looks up the logged model of a ``models:/<model_id>`` source with a default
    ``MlflowClient()``. ``Registry.log_model`` and ``Registry.register`` wrap exactly those
    calls in this context manager: the one place where sentops sets that global,
    through MLflow's own private ``_use_tracking_uri`` (kept to this function). That helper
    also exports and, on the way out, unsets ``MLFLOW_TRACKING_URI``: the variable is put
    back as it was, so a URI the user exported survives and none of ours leaks to settings
    loaded later or to child processes. Not thread-safe (sentops logs models from one thread)."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    exported = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if exported is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = exported
