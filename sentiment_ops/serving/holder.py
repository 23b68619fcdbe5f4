"""The model holder: the version being served, swapped atomically on hot reload.

A background thread polls the alias every ``serve.poll_interval_s``. When it points at a
new version, that version is loaded through the logged MLflow model, warmed up and only
then swapped in; batches already running keep the object they started with, so requests
in flight finish on the old version. A version that fails to load leaves the old one
serving; the failure is kept (``last_error``) for ``/model``, the log and ``/metrics``,
and that version is not retried by the poller until the alias moves again (an explicit
reload retries it). What ``/model`` and ``/ready`` show of a failure says what failed in
plain words (``public_reason``); its detail (a registry's host name, a path) goes to the
log only, with credentials masked."""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sentiment_ops.config import Settings
from sentiment_ops.errors import ModelLoadError, NotFoundError, RegistryUnavailableError, SentopsError
from sentiment_ops.inference.passes import Predictor
from sentiment_ops.labels import BINARY, LabelSet
from sentiment_ops.redaction import redact
from sentiment_ops.store import utcnow
from sentiment_ops.tracking.predictors import ModelRefusedError, predictor_for
from sentiment_ops.tracking.registry import Registry, VersionInfo

log = logging.getLogger("sentiment_ops.serving")

WARMUP_TEXTS = [
    "Great film.",
    "A slow, muddled and overlong story that never finds its footing, " * 12,
]


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    alias: str
    run_id: str | None
    source: str
    backend: str
    loaded_at: datetime
    predictor: Predictor
    classes: LabelSet = BINARY  # the model's output names, in index order


@dataclass(frozen=True)
class ReloadFailure:
    version: int | None
    error: str
    at: datetime


class HolderListener(Protocol):
    def model_loaded(self, model: LoadedModel) -> None: ...

    def reload_failed(self, failure: ReloadFailure) -> None: ...


def inference_workers(settings: Settings) -> int:
    """Forward passes run at once: torch shares one global thread pool, so it runs one."""
    return settings.serve.inference_workers if settings.serve.backend == "onnx" else 1


def onnx_threads(settings: Settings) -> int:
    """Intra-op threads of one pass when ``inference_workers`` passes run at once."""
    return max(1, _cores(settings) // inference_workers(settings))


def solo_threads(settings: Settings) -> int | None:
    """Intra-op threads of a pass that runs alone (every core; ``serve.adaptive_threads``),
    or None when there is no such second session (torch, one worker, the setting off)."""
    cores = settings.serve.solo_threads or _cores(settings)
    if settings.serve.backend != "onnx" or not settings.serve.adaptive_threads or cores <= onnx_threads(settings):
        return None
    return cores


def _cores(settings: Settings) -> int:
    return settings.serve.torch_threads or os.cpu_count() or 1


def freeze_heap() -> None:
    """Collect once, then move every object alive (libraries, the model, the app) out of
    the cyclic garbage collector's reach (``gc.freeze``). A server process holds a few
    hundred thousand long-lived objects; a full collection walks them all with the GIL held,
    stalling every request in flight at once. What is allocated per request is still
    collected."""
    gc.collect()
    gc.freeze()


def public_reason(exc: Exception) -> str:
    """Why a version did not load, in words fit for a public answer: a refusal says its
    own reason (``ModelRefusedError``); other failures say what failed, never the
    wrapped error's text (host names, paths), which the log has."""
    if isinstance(exc, ModelRefusedError):
        return " ".join(str(exc).split())[:500]
    if isinstance(exc, RegistryUnavailableError):
        return "cannot load the version: the model registry is unavailable (details in the server log)"
    if isinstance(exc, ModelLoadError):
        return "cannot load the version's model files (details in the server log)"
    return f"cannot load the version: unexpected {type(exc).__name__} (details in the server log)"


class ModelHolder:
    def __init__(
        self,
        settings: Settings,
        registry: Registry | Callable[[], Registry] | None = None,
        listener: HolderListener | None = None,
    ) -> None:
        self.settings = settings
        self.alias = settings.serve.alias
        self.model_name = settings.mlflow.model_name
        self.backend = settings.serve.backend
        self._registry_arg = registry
        self._registry: Registry | None = registry if isinstance(registry, Registry) else None
        self._listener = listener
        self._current: LoadedModel | None = None
        self.last_error: ReloadFailure | None = None
        self._check_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said_no_model = False
        self._said_unreachable = False
        self.registry_unreachable = False  # the last alias lookup could not reach the registry
        if self.backend == "torch":
            from sentiment_ops.modeling import set_cpu_threads

            set_cpu_threads(settings.serve.torch_threads)

    # -- state ---------------------------------------------------------------------------
    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    @property
    def registry(self) -> Registry:
        """The registry the holder follows the alias in (built on first use): the app's one
        registry, shared by the routes that read MLflow."""
        return self._get_registry()

    def _get_registry(self) -> Registry:
        if self._registry is None:
            factory = self._registry_arg if callable(self._registry_arg) else None
            self._registry = factory() if factory is not None else Registry(self.settings)
        return self._registry

    # -- loading -------------------------------------------------------------------------
    def check(self, force: bool = False) -> bool:
        """Resolve the alias and load its version if it is not the one serving.

        Returns True when a new model was swapped in. Never raises on an expected
        failure: an absent alias or unreachable registry is logged and the current model
        (if any) keeps serving; a load failure is recorded in ``last_error``."""
        with self._check_lock:
            try:
                info = self._get_registry().version_for_alias(self.alias)
            except NotFoundError:
                if not self._said_no_model:
                    log.warning(
                        "no model behind alias %r of %r yet; serving nothing until one is promoted",
                        self.alias,
                        self.model_name,
                    )
                    self._said_no_model = True
                return False
            except SentopsError as exc:
                self.registry_unreachable = isinstance(exc, RegistryUnavailableError)
                if not self._said_unreachable:
                    log.error("cannot resolve alias %r: %s (will keep trying)", self.alias, redact(str(exc)))
                    self._said_unreachable = True
                return False
            self._said_unreachable = self.registry_unreachable = False
            current = self._current
            if current is not None and current.version == info.version and not force:
                return False
            failed = self.last_error
            if not force and failed is not None and failed.version == info.version:
                return False  # already failed; wait for the alias to move or an explicit reload
            return self._load(info)

    def _load(self, info: VersionInfo) -> bool:
        registry = self._get_registry()
        log.info(
            "loading %s version %d (alias %r, backend %s)", self.model_name, info.version, self.alias, self.backend
        )
        try:
            loaded = self._load_version(registry, info)
        except Exception as exc:  # noqa: BLE001 - any load failure must leave the old model serving
            return self._failed(info.version, exc)
        old = self._current
        self._current = loaded  # the atomic swap: readers take one reference per batch
        gc.freeze()  # the new model's objects: never scanned by the cyclic collector (see freeze_heap)
        self.last_error = None
        self._said_no_model = False
        log.info("now serving %s version %d%s", self.model_name, info.version, f" (was {old.version})" if old else "")
        if self._listener is not None:
            self._listener.model_loaded(loaded)
        return True

    def _load_version(self, registry: Registry, info: VersionInfo) -> LoadedModel:
        predictor = predictor_for(
            registry,
            info,
            self.backend,
            threads=onnx_threads(self.settings),
            torch_threads=self.settings.serve.torch_threads,
            max_length=self.settings.serve.max_length,
            solo_threads=solo_threads(self.settings),
        )
        solo = getattr(predictor, "solo", predictor)
        for texts in (WARMUP_TEXTS[:1], WARMUP_TEXTS, WARMUP_TEXTS * 4):
            predictor.forward_ids(predictor.encode(texts))
            if solo is not predictor:
                solo.forward_ids(predictor.encode(texts))
        return LoadedModel(
            name=self.model_name,
            version=info.version,
            alias=self.alias,
            run_id=info.run_id,
            source=info.source,
            backend=self.backend,
            loaded_at=utcnow(),
            predictor=predictor,
            classes=predictor.classes,
        )

    def _failed(self, version: int | None, exc: Exception) -> bool:
        failure = ReloadFailure(version=version, error=public_reason(exc), at=utcnow())
        self.last_error = failure
        serving = f"still serving version {self._current.version}" if self._current else "no model is serving"
        detail = redact(" ".join(f"{type(exc).__name__}: {exc}".split()))
        log.error("cannot load %s version %s: %s (%s)", self.model_name, version, detail, serving)
        if self._listener is not None:
            self._listener.reload_failed(failure)
        return False

    # -- polling -------------------------------------------------------------------------
    def start_polling(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="sentops-alias-poller", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        interval = self.settings.serve.poll_interval_s
        while not self._stop.wait(interval):
            self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
