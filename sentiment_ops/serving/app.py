"""The FastAPI app factory. Nothing is loaded at import: ``create_app(settings)`` wires
the parts and the lifespan opens the store, loads the model behind the alias (or notes
that there is none yet), and starts the alias poller and the micro-batcher; on shutdown
it stops them and flushes every queued prediction to the store."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from sentiment_ops import __version__
from sentiment_ops.config import WORKER_SETTINGS_ENV, Settings
from sentiment_ops.errors import ConfigError
from sentiment_ops.paths import writable_dir
from sentiment_ops.serving.batcher import MicroBatcher
from sentiment_ops.serving.body_limit import Admission, BodyLimitMiddleware, body_limits
from sentiment_ops.serving.holder import ModelHolder, freeze_heap, inference_workers
from sentiment_ops.serving.label_page import label_router
from sentiment_ops.serving.metrics import MetricsMiddleware, ServingMetrics
from sentiment_ops.serving.request_ids import HEADER, RequestIdMiddleware
from sentiment_ops.serving.routes import ServingState, build_router
from sentiment_ops.serving.schemas import request_models
from sentiment_ops.serving.store_writer import StoreWriter
from sentiment_ops.store import InferenceStore, open_store
from sentiment_ops.tracking.registry import Registry

log = logging.getLogger("sentiment_ops.serving")

ADMIN_TOKEN_ENV = "SENTOPS_ADMIN_TOKEN"
FEEDBACK_TOKEN_ENV = "SENTOPS_FEEDBACK_TOKEN"  # required for POST /feedback (label writes)
PREDICT_TOKEN_ENV = "SENTOPS_PREDICT_TOKEN"  # optional: when set, the predict routes need it

DESCRIPTION = """Serves the model behind an MLflow alias (default `production`), logs every
prediction with its embedding to the inference store, and hot-reloads when the alias moves.
Bad input gets a 4xx with a one-line `detail`."""


def create_app(
    settings: Settings,
    registry: Registry | None = None,
    store: InferenceStore | None = None,
) -> FastAPI:
    """Build the app. ``registry`` and ``store`` may be passed in (tests, embedding);
    by default they are opened from ``settings`` when the app starts. ConfigError when
    ``serve.require_predict_token`` is set and SENTOPS_PREDICT_TOKEN is not."""
    check_tokens(settings)
    serve = settings.serve
    metrics = ServingMetrics(settings.mlflow.model_name, serve.backend)
    holder = ModelHolder(settings, registry, listener=metrics)
    writer = StoreWriter(
        store,
        max_queue=serve.store_queue_max,
        max_text_chars=serve.store_queue_max_mb * 1024 * 1024 // 4,
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
    state = ServingState(settings=settings, holder=holder, batcher=batcher, writer=writer, metrics=metrics, store=store)
    metrics.watch_drift(lambda: state.store, settings.mlflow.model_name)
    own_store = store is None
    admission = Admission(serve.max_concurrent_requests, serve.max_inflight_mb * 1024 * 1024)

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
        log.info("sentops serve ready=%s on alias %r", holder.ready, serve.alias)
        try:
            yield
        finally:
            await run_in_threadpool(holder.stop)
            await batcher.stop()
            await run_in_threadpool(writer.close)
            if own_store:
                state.store.close()
                state.store = None

    app = FastAPI(
        title="sentops serve",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs" if serve.docs else None,  # serve.docs: false hides the API's description
        redoc_url="/redoc" if serve.docs else None,
        openapi_url="/openapi.json" if serve.docs else None,
    )
    app.state.sentops = state
    app.state.admission = admission  # the text requests in progress (body_limit.Admission)
    app.include_router(
        build_router(
            request_models(serve.max_text_chars, serve.max_batch_items),
            serve.max_batch_items,
            os.environ.get(ADMIN_TOKEN_ENV) or None,
            feedback_token=os.environ.get(FEEDBACK_TOKEN_ENV) or None,
            predict_token=os.environ.get(PREDICT_TOKEN_ENV) or None,
        )
    )
    app.include_router(label_router(os.environ.get(FEEDBACK_TOKEN_ENV) or None))  # /label: the labeling page
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(
        BodyLimitMiddleware, limits=body_limits(serve.max_text_chars, serve.max_batch_items), admission=admission
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # outermost: every answer carries X-Request-Id, and nosniff (no answer is sniffed as HTML)
    app.add_middleware(RequestIdMiddleware, extra_headers=[(b"x-content-type-options", b"nosniff")])
    return app


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


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for err in exc.errors():
        message = str(err.get("msg", "invalid"))
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":  # loc: ("body", the character position)
            why = err.get("ctx", {}).get("error", "parse error")
            message = f"request body is not valid JSON ({why}: character {loc[-1]})"
            loc = ("body",)
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        errors.append({"field": _field(loc), "message": message, "type": str(err.get("type"))})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5]) or "invalid request"
    if len(errors) > 5:
        detail += f"; and {len(errors) - 5} more"
    return JSONResponse({"detail": detail, "errors": errors[:50]}, status_code=422)


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 400:  # FastAPI's "There was an error parsing the body": say why
        cause = exc.__cause__
        if isinstance(cause, UnicodeDecodeError):
            detail = f"request body is not UTF-8 ({cause.reason} at byte {cause.start})"
        elif isinstance(cause, RecursionError):
            detail = "request body is not valid JSON (nested too deeply)"
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette answers this outside every middleware: the request id is set here again
    request_id = getattr(request.state, "request_id", None)
    log.error(
        "unexpected error on %s %s", request.method, request.url.path, exc_info=exc, extra={"request_id": request_id}
    )
    headers = {"X-Content-Type-Options": "nosniff", **({HEADER: request_id} if request_id else {})}
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500, headers=headers)
