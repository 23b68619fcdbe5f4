"""The HTTP endpoints, one router per resource (predict, feedback, ops, admin), joined by
``build_router``; handlers reach the app's parts through the ``State`` and ``Store``
dependencies. Handlers stay thin: validate, hand texts to the batcher, shape the answer.
Blocking work (store reads/writes, model loads) runs in threads."""

# No ``from __future__ import annotations`` here: the request models are built per app
# and FastAPI must see the real classes in the handler signatures.

import logging
import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from sentiment_ops.config import Settings
from sentiment_ops.errors import DataError, NotFoundError, StoreError
from sentiment_ops.redaction import redact
from sentiment_ops.serving.batcher import MicroBatcher, ModelUnavailableError, Result
from sentiment_ops.serving.holder import ModelHolder
from sentiment_ops.serving.metrics import CONTENT_TYPE_LATEST, ServingMetrics
from sentiment_ops.serving.schemas import (
    BatchPredictResponse,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    InvocationsResponse,
    ModelInfoResponse,
    PredictResponse,
    ReadyResponse,
    ReloadError,
    ReloadResponse,
    RequestModels,
    ValidationErrorResponse,
    check_text,
)
from sentiment_ops.serving.store_writer import QueueFullError, StoreWriter
from sentiment_ops.store import InferenceStore

log = logging.getLogger("sentiment_ops.serving")


@dataclass
class ServingState:
    settings: Settings
    holder: ModelHolder
    batcher: MicroBatcher
    writer: StoreWriter
    metrics: ServingMetrics
    store: InferenceStore | None = None


# The dependencies are coroutines: FastAPI runs a plain ``def`` dependency in a worker
# thread, two thread hops per /predict (measured ~15 % of the event loop's time at 32 clients).
async def get_state(request: Request) -> ServingState:
    return request.app.state.sentops


async def get_store(state: Annotated[ServingState, Depends(get_state)]) -> InferenceStore:
    """The store the app opened at startup (the routes run only after it)."""
    assert state.store is not None
    return state.store


async def get_request_id(request: Request) -> str | None:
    """This request's id (``RequestIdMiddleware``: the client's X-Request-Id or a new one)."""
    return getattr(request.state, "request_id", None)


State = Annotated[ServingState, Depends(get_state)]
Store = Annotated[InferenceStore, Depends(get_store)]
RequestId = Annotated[str | None, Depends(get_request_id)]

E422: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body cannot be parsed (not UTF-8)."},
    422: {"model": ValidationErrorResponse, "description": "Invalid input."},
}
E503: dict[int | str, dict[str, Any]] = {
    503: {
        "model": ErrorResponse,
        "description": "No model is loaded yet, or the inference store cannot keep up (Retry-After).",
    }
}
STORE_RETRY_AFTER_S = "5"  # the writer retries a failing store every 2 s at most


E401: dict[int | str, dict[str, Any]] = {401: {"model": ErrorResponse, "description": "No or a wrong bearer token."}}
E404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "Unknown prediction id."}}
E403: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorResponse, "description": "Label writes are disabled: the server has no SENTOPS_FEEDBACK_TOKEN."}
}


def bearer_guard(token: str | None, scheme_name: str, description: str, disabled: str) -> Any:
    """A dependency that admits ``Authorization: Bearer <token>`` (compared in constant
    time) and answers 401 otherwise; with no token configured it refuses everyone (403,
    ``disabled`` says why). The scheme shows in the OpenAPI docs."""
    scheme = HTTPBearer(scheme_name=scheme_name, description=description, auto_error=False)
    expected = token.encode() if token else None

    async def guard(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(scheme)]) -> None:
        if expected is None:
            raise HTTPException(403, disabled)
        given = credentials.credentials.encode() if credentials is not None else b""
        if not secrets.compare_digest(given, expected):
            raise HTTPException(
                401, f"a valid bearer token is required ({scheme_name})", headers={"WWW-Authenticate": "Bearer"}
            )

    return guard


def _unavailable(state: ServingState) -> HTTPException:
    s = state.settings
    why = f"; last load error: {state.holder.last_error.error}" if state.holder.last_error else ""
    if state.holder.registry_unreachable:
        why += "; the model registry is unavailable"
    return HTTPException(
        503,
        f"no model is loaded: alias {s.serve.alias!r} of {s.mlflow.model_name!r} has no loadable version yet{why}",
    )


def store_failed(exc: StoreError, action: str) -> HTTPException:
    """A 503 for a store failure while ``action``: the body says what failed in plain words,
    the store's own message (host names) goes to the log, with credentials masked."""
    log.error("%s failed: %s", action, redact(str(exc)))
    return HTTPException(503, "inference store unavailable; retry later", headers={"Retry-After": STORE_RETRY_AFTER_S})


async def _predict(state: ServingState, texts: list[str], request_id: str | None = None) -> list[Result]:
    """Predict, with room held in the store's write-behind queue first: a request that the
    store could not take is refused (503) before any work, never answered and then lost.
    Every row of the request is stored with its ``request_id``."""
    chars = sum(map(len, texts))
    try:
        state.writer.reserve(len(texts), chars)
    except QueueFullError as exc:
        state.metrics.rows_rejected(len(texts))
        raise HTTPException(503, str(exc), headers={"Retry-After": STORE_RETRY_AFTER_S}) from None
    try:
        return await state.batcher.predict(texts, request_id)
    except ModelUnavailableError:
        raise _unavailable(state) from None
    finally:
        state.writer.release(len(texts), chars)


def result_dict(r: Result) -> dict[str, Any]:
    return {
        "id": r.id,
        "timestamp": r.created_at.isoformat(),
        "text": r.text,
        "prediction": r.label,
        "label": r.label_name,
        "confidence": r.confidence,
        "probability": r.probability,
        "model": {"name": r.model.name, "version": r.model.version, "alias": r.model.alias},
        "model_stage": r.model.alias,
    }


def invocation_dict(r: Result) -> dict[str, Any]:
    return {"label": r.label, "label_name": r.label_name, "probability": r.probability, "confidence": r.confidence}


def model_info(state: ServingState) -> dict[str, Any]:
    holder = state.holder
    current = holder.current
    err = holder.last_error
    return ModelInfoResponse(
        ready=current is not None,
        name=holder.model_name,
        alias=holder.alias,
        backend=holder.backend,
        version=current.version if current else None,
        run_id=current.run_id if current else None,
        source=redact(current.source) if current else None,
        loaded_at=current.loaded_at if current else None,
        last_reload_error=None if err is None else ReloadError(version=err.version, error=err.error, at=err.at),
    ).model_dump(mode="json")


def build_router(
    models: RequestModels,
    max_items: int,
    admin_token: str | None,
    feedback_token: str | None = None,
    predict_token: str | None = None,
) -> APIRouter:
    """Every endpoint, one router per resource. ``feedback_token`` guards POST /feedback
    (labels train the next model: without a token nobody may write them); ``predict_token``,
    when given, guards the predict routes; ``admin_token``, when given, adds /admin/reload."""
    router = APIRouter()
    router.include_router(predict_router(models, max_items, predict_token))
    router.include_router(feedback_router(feedback_token))
    router.include_router(ops_router())
    if admin_token:
        router.include_router(admin_router(admin_token))
    return router


def predict_router(models: RequestModels, max_items: int, predict_token: str | None) -> APIRouter:
    """/predict, /predict/batch and /invocations (the MLflow scoring protocol)."""
    dependencies = (
        [Depends(bearer_guard(predict_token, "SENTOPS_PREDICT_TOKEN", "Optional token for predictions.", ""))]
        if predict_token
        else []
    )
    router = APIRouter(tags=["predict"], dependencies=dependencies)
    responses = {**E422, **E503, **(E401 if predict_token else {})}
    PredictRequest = models.predict
    BatchPredictRequest = models.batch

    @router.post("/predict", response_model=PredictResponse, responses=responses)
    async def predict(body: PredictRequest, state: State, request_id: RequestId) -> Response:  # type: ignore[valid-type]
        """Classify one text; the prediction is logged (use its `id` for /feedback)."""
        results = await _predict(state, [body.text], request_id)  # type: ignore[attr-defined]
        return JSONResponse(result_dict(results[0]))

    @router.post("/predict/batch", response_model=BatchPredictResponse, responses=responses)
    async def predict_batch(body: BatchPredictRequest, state: State, request_id: RequestId) -> Response:  # type: ignore[valid-type]
        """Classify up to `serve.max_batch_items` texts in one request."""
        results = await _predict(state, list(body.texts), request_id)  # type: ignore[attr-defined]
        return JSONResponse({"predictions": [result_dict(r) for r in results]})

    @router.post("/invocations", response_model=InvocationsResponse, responses=responses)
    async def invocations(state: State, request_id: RequestId, body: Annotated[dict[str, Any], Body()]) -> Response:
        """The MLflow scoring protocol (`dataframe_split`, `dataframe_records`, `inputs`, `instances`)."""
        texts = invocation_texts(body, max_items, state.settings.serve.max_text_chars)
        results = await _predict(state, texts, request_id)
        return JSONResponse({"predictions": [invocation_dict(r) for r in results]})

    return router


def feedback_router(feedback_token: str | None) -> APIRouter:
    """POST /feedback: a true label for a logged prediction, behind SENTOPS_FEEDBACK_TOKEN."""
    guard = bearer_guard(
        feedback_token,
        "SENTOPS_FEEDBACK_TOKEN",
        "The label-writer token: labels train the next model.",
        "label writes are disabled: set SENTOPS_FEEDBACK_TOKEN on the server "
        "and send it as `Authorization: Bearer <token>`",
    )
    router = APIRouter(tags=["feedback"], dependencies=[Depends(guard)])

    @router.post("/feedback", response_model=FeedbackResponse, responses={**E422, **E401, **E403, **E404})
    async def feedback(body: FeedbackRequest, state: State, store: Store) -> FeedbackResponse:
        """Record the true label (0/1 or "negative"/"positive") of a logged prediction
        (bearer token SENTOPS_FEEDBACK_TOKEN: these labels train the next model)."""
        label = body.label_int()
        try:
            try:
                updated = await run_in_threadpool(store.set_feedback, body.id, label)
            except NotFoundError:
                # It may still be in the write-behind queue: flush, then look again.
                await run_in_threadpool(state.writer.flush, 10.0)
                updated = await run_in_threadpool(store.set_feedback, body.id, label)
        except NotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        except DataError as exc:
            raise HTTPException(422, str(exc)) from None
        except StoreError as exc:
            raise store_failed(exc, "recording feedback") from None
        return FeedbackResponse(id=body.id, label=label, updated=updated)

    return router


def ops_router() -> APIRouter:
    """/health, /ready, /model and /metrics: for load balancers, people and Prometheus."""
    router = APIRouter(tags=["ops"])

    @router.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        """The process is alive."""
        return HealthResponse()

    @router.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
    async def ready(state: State) -> Response:
        """200 when a model is loaded and the inference store keeps up, 503 (with the reason) otherwise."""
        current = state.holder.current
        if current is None:
            return JSONResponse({"ready": False, "version": None, "detail": _unavailable(state).detail}, 503)
        problem = state.writer.problem()
        if problem is not None:
            return JSONResponse({"ready": False, "version": current.version, "detail": problem}, 503)
        return JSONResponse({"ready": True, "version": current.version, "detail": None})

    @router.get("/model", response_model=ModelInfoResponse)
    async def model(state: State) -> Response:
        """Name, version, alias, run id, load time and the last reload error of the served model."""
        return JSONResponse(model_info(state))

    prometheus: dict[int | str, dict[str, Any]] = {
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text."}
    }

    @router.get("/metrics", response_class=Response, responses=prometheus)
    async def metrics(state: State) -> Response:
        """Prometheus metrics: requests, latency, batch sizes, predictions by label, model version,
        build info, process and GC, the last drift check of each version (docs/serving.md)."""
        # in a thread: the drift series are read from the store at each scrape
        body = await run_in_threadpool(state.metrics.render, state.writer.pending, state.writer.store_up)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router


def admin_router(admin_token: str) -> APIRouter:
    """POST /admin/reload, behind SENTOPS_ADMIN_TOKEN (only mounted when one is set)."""
    router = APIRouter(tags=["ops"])

    @router.post(
        "/admin/reload",
        response_model=ReloadResponse,
        responses={401: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
    )
    async def reload(state: State, authorization: Annotated[str | None, Header()] = None) -> Response:
        """Resolve the alias now and (re)load its version (bearer token SENTOPS_ADMIN_TOKEN)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), admin_token.encode()):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        before = state.holder.last_error
        changed = await run_in_threadpool(state.holder.check, True)
        err = state.holder.last_error
        if err is not None and err is not before:
            serving = state.holder.current
            still = f"still serving version {serving.version}" if serving else "no model is serving"
            raise HTTPException(409, f"cannot load version {err.version}: {err.error} ({still})")
        return JSONResponse({"changed": changed, "model": model_info(state)})

    return router


def invocation_texts(body: dict[str, Any], max_items: int, max_chars: int) -> list[str]:
    """Texts from an MLflow scoring request; a clear 422 for anything else."""
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("data"), list):
            raise _bad("dataframe_split needs a 'data' list (and optionally 'columns')")
        cols = split.get("columns") or ["text"]
        if not isinstance(cols, list) or "text" not in cols:
            raise _bad("dataframe_split needs a 'text' column")
        col = cols.index("text")
        rows = split["data"]
        if not all(isinstance(r, list) and len(r) > col for r in rows):
            raise _bad("every dataframe_split row must be a list holding the 'text' column")
        raw = [r[col] for r in rows]
    elif "dataframe_records" in body:
        recs = body["dataframe_records"]
        if not isinstance(recs, list) or not all(isinstance(r, dict) and "text" in r for r in recs):
            raise _bad("dataframe_records must be a list of objects with a 'text' field")
        raw = [r["text"] for r in recs]
    elif "inputs" in body or "instances" in body:
        value = body.get("inputs", body.get("instances"))
        if isinstance(value, dict):
            value = value.get("text")
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise _bad("inputs must be a list of texts or {'text': [...]}")
        raw = [v.get("text") if isinstance(v, dict) else v for v in value]
    else:
        raise _bad("body needs one of dataframe_split, dataframe_records, inputs, instances")
    if not raw:
        raise _bad("no texts given")
    if len(raw) > max_items:
        raise _bad(f"at most {max_items} texts per request, got {len(raw)}")
    texts = []
    for i, t in enumerate(raw):
        if not isinstance(t, str):
            raise _bad(f"text {i} must be a string, got {type(t).__name__}")
        if len(t) > max_chars:
            raise _bad(f"text {i} has {len(t)} characters, the maximum is {max_chars}")
        try:
            texts.append(check_text(t))
        except ValueError as exc:
            raise _bad(f"text {i}: {exc}") from None
    return texts


def _bad(message: str) -> HTTPException:
    return HTTPException(422, message)
