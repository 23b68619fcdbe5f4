"""The FastAPI app factory. Nothing is loaded at import: ``create_app(settings)`` wires
the parts and the lifespan opens the store, loads the model behind the alias (or notes
that there is none yet), and starts the alias poller and the micro-batcher; on shutdown
it stops them and flushes every queued prediction to the store."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from sentiment_ops import __version__
from sentiment_ops.config import Settings
from sentiment_ops.errors import ConfigError
from sentiment_ops.paths import writable_dir
from sentiment_ops.serving import http_errors
from sentiment_ops.serving.batcher import MicroBatcher
from sentiment_ops.serving.body_limit import Admission, BodyLimitMiddleware, body_limits
from sentiment_ops.serving.deps import ADMIN_TOKEN, FEEDBACK_TOKEN, PREDICT_TOKEN, ServingState, read_tokens
from sentiment_ops.serving.holder import ModelHolder, freeze_heap, inference_workers
from sentiment_ops.serving.http_protocol import check_uvicorn
from sentiment_ops.serving.label_page import label_router
from sentiment_ops.serving.metrics import MetricsMiddleware, ServingMetrics
from sentiment_ops.serving.request_ids import RequestIdMiddleware
from sentiment_ops.serving.routes import build_router
from sentiment_ops.serving.schemas import request_models
from sentiment_ops.serving.store_writer import StoreWriter, WriterLimits
from sentiment_ops.settings_layers import WORKER_SETTINGS_ENV
from sentiment_ops.store import InferenceStore, open_store
from sentiment_ops.tracking.registry import Registry

log = logging.getLogger("sentiment_ops.serving")

ADMIN_TOKEN_ENV = ADMIN_TOKEN.env
FEEDBACK_TOKEN_ENV = FEEDBACK_TOKEN.env  # required for POST /feedback (label writes)
PREDICT_TOKEN_ENV = PREDICT_TOKEN.env  # optional: when set, the predict routes need it

DESCRIPTION = """Serves the model behind an MLflow alias (default `production`), logs every
prediction with its embedding to the inference store, and hot-reloads when the alias moves.
Every error answer is JSON with a one-line `detail`; each route declares the statuses it may
answer, and its inputs' limits."""


def create_app(
    settings: Settings,
    registry: Registry | None = None,
    store: InferenceStore | None = None,
) -> FastAPI:
    """Build the app. ``registry`` and ``store`` may be passed in (tests, embedding);
    by default they are opened from ``settings`` when the app starts. ConfigError when
    ``serve.require_predict_token`` is set and SENTOPS_PREDICT_TOKEN is not; SentopsError
    when the installed uvicorn lacks what the server's HTTP protocol relies on."""
    check_tokens(settings)
    check_uvicorn()
    serve = settings.serve
    state = _parts(settings, registry, store)
    admission = Admission(serve.max_concurrent_requests, serve.max_inflight_mb * 1024 * 1024)
    app = FastAPI(
        title="sentops serve",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan(state, own_store=store is None),
        docs_url="/docs" if serve.docs else None,  # serve.docs: false hides the API's description
        redoc_url="/redoc" if serve.docs else None,
        openapi_url="/openapi.json" if serve.docs else None,
        responses=http_errors.APP_ERRORS,  # what any route may answer (the HTTP protocol's 408, 431)
    )
    app.state.sentops = state
    app.state.admission = admission  # the text requests in progress (body_limit.Admission)
    app.include_router(
        build_router(request_models(serve.max_text_chars, serve.max_batch_items), serve.max_batch_items, state.tokens)
    )
    app.include_router(label_router())  # /label: the labeling page
    http_errors.install(app)
    app.add_middleware(
        BodyLimitMiddleware, limits=body_limits(serve.max_text_chars, serve.max_batch_items), admission=admission
    )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    # outermost: every answer carries X-Request-Id, and nosniff (no answer is sniffed as HTML)
    app.add_middleware(RequestIdMiddleware, extra_headers=[(b"x-content-type-options", b"nosniff")])
    return app


def _parts(settings: Settings, registry: Registry | None, store: InferenceStore | None) -> ServingState:
    """The app's parts, wired to each other; nothing is opened or started yet."""
    serve = settings.serve
    metrics = ServingMetrics(settings.mlflow.model_name, serve.backend)
    holder = ModelHolder(settings, registry, listener=metrics)
    writer = StoreWriter(
        store,
        WriterLimits.from_settings(serve),
        on_write=metrics.rows_written,
        on_error=metrics.store_error,
        on_dead_letter=metrics.rows_dead_lettered,
    )
    batcher = MicroBatcher(
        holder,
        writer,
        metrics,
        max_size=serve.batch_max_size,
        max_wait_ms=serve.batch_max_wait_ms,
        max_tokens=serve.batch_max_tokens,
        workers=inference_workers(settings),
    )
    state = ServingState(settings, holder, batcher, writer, metrics, store=store, tokens=read_tokens())
    metrics.watch_drift(lambda: state.store, settings.mlflow.model_name)
    return state


def _lifespan(state: ServingState, own_store: bool) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start-up opens the store (unless given: ``own_store`` False), loads the model behind
    the alias and starts the poller, the batcher and the writer; shutdown stops them and
    flushes every queued prediction to the store."""
    settings, holder, writer, batcher = state.settings, state.holder, state.writer, state.batcher

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.store is None:
            writable_dir(settings.home)
            state.store = await run_in_threadpool(open_store, settings)
        writer.store = state.store
        writer.start()
        await run_in_threadpool(holder.check)
        freeze_heap()  # after the first model's load: see holder.freeze_heap
        holder.start_polling()
        await batcher.start()
        log.info("sentops serve ready=%s on alias %r", holder.ready, settings.serve.alias)
        try:
            yield
        finally:
            await run_in_threadpool(holder.stop)
            await batcher.stop()
            await run_in_threadpool(writer.close)
            if own_store:
                state.store.close()
                state.store = None

    return lifespan


def check_tokens(settings: Settings) -> None:
    """ConfigError (one line) when ``serve.require_predict_token`` is set and the server's
    environment has no SENTOPS_PREDICT_TOKEN: /predict must not be open by accident."""
    if settings.serve.require_predict_token and not os.environ.get(PREDICT_TOKEN_ENV):
        raise ConfigError(
            f"serve.require_predict_token is true but {PREDICT_TOKEN_ENV} is not set: set the token "
            "(clients send it as `Authorization: Bearer <token>`), or set serve.require_predict_token "
            "to false to open the predict routes"
        )


def worker_settings(settings: Settings, workers: int) -> Settings:
    """The settings of one of ``workers`` server processes: each gets cores / workers
    threads (``serve.torch_threads``, unless set) and at most that many passes at once; a
    pass that runs alone keeps every core (``serve.solo_threads``, unless set): a lone
    request on an idle server is as fast as with one process."""
    if workers <= 1:
        return settings
    serve = settings.serve.model_copy()
    serve.solo_threads = serve.solo_threads or serve.torch_threads or os.cpu_count() or 1
    per_worker = serve.torch_threads or max(1, (os.cpu_count() or 1) // workers)
    serve.torch_threads = per_worker
    serve.inference_workers = max(1, min(serve.inference_workers, per_worker))
    return settings.model_copy(update={"serve": serve})


def create_app_from_env() -> FastAPI:
    """The app of one worker process of ``sentops serve --workers N`` (a uvicorn factory):
    the settings the command resolved, as JSON in ``SENTOPS_WORKER_SETTINGS``. Each worker
    has its own model, micro-batcher, store writer and alias poller."""
    raw = os.environ.get(WORKER_SETTINGS_ENV)
    if not raw:
        raise RuntimeError(f"{WORKER_SETTINGS_ENV} is not set: start the workers with `sentops serve --workers N`")
    settings = Settings.model_validate_json(raw)
    logging.getLogger("sentiment_ops").setLevel(settings.log_level.upper())
    return create_app(settings)
