"""The HTTP endpoints, one router per resource (predict, feedback, ops, admin), joined by
``build_router``; handlers reach the app's parts through the dependencies of ``deps``;
errors are answered by ``http_errors``. Handlers stay thin: validate, hand texts to the batcher, shape the answer.
Blocking work (store reads/writes, model loads) runs in threads."""

# No ``from __future__ import annotations`` here: the request models are built per app
# and FastAPI must see the real classes in the handler signatures.

from collections.abc import Collection
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from sentiment_ops.config import Settings
from sentiment_ops.errors import NotFoundError
from sentiment_ops.inference.passes import probability_columns
from sentiment_ops.labels import LabelSet
from sentiment_ops.redaction import redact
from sentiment_ops.serving.batcher import ModelUnavailableError, Result
from sentiment_ops.serving.deps import (
    ADMIN_TOKEN,
    PREDICT_TOKEN,
    AdminAuth,
    AppSettings,
    FeedbackAuth,
    Holder,
    Metrics,
    PredictAuth,
    RequestId,
    ServingState,
    State,
    Store,
    Writer,
)
from sentiment_ops.serving.holder import ModelHolder
from sentiment_ops.serving.http_errors import BODY_ERRORS, responses
from sentiment_ops.serving.metrics import CONTENT_TYPE_LATEST
from sentiment_ops.serving.schemas import (
    BatchPredictResponse,
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
    check_text,
)
from sentiment_ops.serving.store_writer import QueueFullError

PREDICT_503 = (
    "No model is loaded yet; or the inference store cannot keep up, or the server is busy "
    "(serve.max_concurrent_requests, serve.max_inflight_mb): Retry-After."
)
STORE_503 = "The inference store is unavailable (Retry-After)."
FEEDBACK_503 = (
    "No model is loaded yet (its classes name the labels), or the inference store is unavailable (Retry-After)."
)


def no_model(holder: ModelHolder, settings: Settings) -> ModelUnavailableError:
    """The 503 of a request that needs a model while none is loaded, saying why."""
    why = f"; last load error: {holder.last_error.error}" if holder.last_error else ""
    if holder.registry_unreachable:
        why += "; the model registry is unavailable"
    return ModelUnavailableError(
        f"no model is loaded: alias {settings.serve.alias!r} of {settings.mlflow.model_name!r} "
        f"has no loadable version yet{why}"
    )


async def _predict(state: ServingState, texts: list[str], request_id: str | None = None) -> list[Result]:
    """Predict, with room held in the store's write-behind queue first: a request that the
    store could not take is refused (503) before any work, never answered and then lost.
    Every row of the request is stored with its ``request_id``."""
    chars = sum(map(len, texts))
    try:
        state.writer.reserve(len(texts), chars)
    except QueueFullError:
        state.metrics.rows_rejected(len(texts))
        raise
    try:
        return await state.batcher.predict(texts, request_id)
    except ModelUnavailableError:
        raise no_model(state.holder, state.settings) from None
    finally:
        state.writer.release(len(texts), chars)


def result_dict(r: Result) -> dict[str, Any]:
    return {
        "id": r.id,
        "timestamp": r.created_at.isoformat(),
        "text": r.text,
        "prediction": r.label,
        "label": r.label_name,
        "probabilities": r.class_probabilities(),
        "confidence": r.confidence,
        "probability": r.probability,
        "model": {"name": r.model.name, "version": r.model.version, "alias": r.model.alias},
        "model_stage": r.model.alias,
    }


def invocation_dict(r: Result) -> dict[str, Any]:
    """One row as the logged pyfunc answers it (``mlflow models serve``): ``probability``
    for a binary model only, then one ``p_<class>`` column per class."""
    row: dict[str, Any] = {"label": r.label, "label_name": r.label_name}
    if r.probability is not None:
        row["probability"] = r.probability
    row["confidence"] = r.confidence
    row.update(zip(probability_columns(r.model.classes), r.probabilities, strict=True))
    return row


def model_info(holder: ModelHolder) -> dict[str, Any]:
    current = holder.current
    err = holder.last_error
    return ModelInfoResponse(
        ready=current is not None,
        name=holder.model_name,
        alias=holder.alias,
        backend=holder.backend,
        version=current.version if current else None,
        labels=list(current.classes.names) if current else None,
        run_id=current.run_id if current else None,
        source=redact(current.source) if current else None,
        loaded_at=current.loaded_at if current else None,
        last_reload_error=None if err is None else ReloadError(version=err.version, error=err.error, at=err.at),
    ).model_dump(mode="json")


def build_router(models: RequestModels, max_items: int, tokens: Collection[str] = ()) -> APIRouter:
    """Every endpoint, one router per resource. ``tokens``: the token variables the server
    has (``deps.read_tokens``). POST /feedback always needs SENTOPS_FEEDBACK_TOKEN (labels
    train the next model: without a token nobody may write them); SENTOPS_PREDICT_TOKEN,
    when set, guards the predict routes; SENTOPS_ADMIN_TOKEN, when set, adds /admin/reload."""
    router = APIRouter()
    router.include_router(predict_router(models, max_items, PREDICT_TOKEN.env in tokens))
    router.include_router(feedback_router())
    router.include_router(ops_router())
    if ADMIN_TOKEN.env in tokens:
        router.include_router(admin_router())
    return router


def predict_router(models: RequestModels, max_items: int, guarded: bool) -> APIRouter:
    """/predict, /predict/batch and /invocations (the MLflow scoring protocol)."""
    router = APIRouter(tags=["predict"], dependencies=[PredictAuth] if guarded else [])
    errors = responses(*BODY_ERRORS, 503, *((401,) if guarded else ()), e503=PREDICT_503)
    PredictRequest = models.predict
    BatchPredictRequest = models.batch
    InvocationsRequest = models.invocations

    @router.post("/predict", response_model=PredictResponse, responses=errors)
    async def predict(body: PredictRequest, state: State, request_id: RequestId) -> Response:  # type: ignore[valid-type]
        """Classify one text; the prediction is logged (use its `id` for /feedback)."""
        results = await _predict(state, [body.text], request_id)  # type: ignore[attr-defined]
        return JSONResponse(result_dict(results[0]))

    @router.post("/predict/batch", response_model=BatchPredictResponse, responses=errors)
    async def predict_batch(body: BatchPredictRequest, state: State, request_id: RequestId) -> Response:  # type: ignore[valid-type]
        """Classify up to `serve.max_batch_items` texts in one request."""
        results = await _predict(state, list(body.texts), request_id)  # type: ignore[attr-defined]
        return JSONResponse({"predictions": [result_dict(r) for r in results]})

    @router.post("/invocations", response_model=InvocationsResponse, responses=errors)
    async def invocations(state: State, request_id: RequestId, body: InvocationsRequest) -> Response:  # type: ignore[valid-type]
        """The MLflow scoring protocol (`dataframe_split`, `dataframe_records`, `inputs`, `instances`)."""
        texts = invocation_texts(body, max_items, state.settings.serve.max_text_chars)
        results = await _predict(state, texts, request_id)
        return JSONResponse({"predictions": [invocation_dict(r) for r in results]})

    return router


def feedback_router() -> APIRouter:
    """POST /feedback: a true label for a logged prediction, behind SENTOPS_FEEDBACK_TOKEN."""
    router = APIRouter(tags=["feedback"], dependencies=[FeedbackAuth])
    errors = responses(*BODY_ERRORS, 401, 403, 404, 503, e503=FEEDBACK_503)

    @router.post("/feedback", response_model=FeedbackResponse, responses=errors)
    async def feedback(
        body: FeedbackRequest, holder: Holder, settings: AppSettings, writer: Writer, store: Store
    ) -> FeedbackResponse:
        """Record the true label of a logged prediction: a class name of the serving model
        (any case) or its index (bearer token SENTOPS_FEEDBACK_TOKEN: these labels train the
        next model)."""
        current = holder.current
        if current is None:
            raise no_model(holder, settings)
        classes = current.classes
        label = body.label_index(classes)
        if label is None:
            raise not_a_class(body.label, classes)
        try:
            updated = await run_in_threadpool(store.set_feedback, body.id, label, classes.k)
        except NotFoundError:
            # It may still be in the write-behind queue: flush, then look again.
            await run_in_threadpool(writer.flush, 10.0)
            updated = await run_in_threadpool(store.set_feedback, body.id, label, classes.k)
        return FeedbackResponse(id=body.id, label=label, updated=updated)

    return router


def not_a_class(value: int | str, classes: LabelSet) -> RequestValidationError:
    """The 422 of a feedback label the serving model does not have, naming its classes."""
    message = (
        f"{value!r} is not a class of the serving model; its classes are {', '.join(classes.names)} "
        f"(a name, any case, or an index 0..{classes.k - 1})"
    )
    return RequestValidationError([{"loc": ("body", "label"), "msg": message, "type": "value_error"}])


def ops_router() -> APIRouter:
    """/health, /ready, /model and /metrics: for load balancers, people and Prometheus."""
    router = APIRouter(tags=["ops"])

    @router.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        """The process is alive."""
        return HealthResponse()

    @router.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
    async def ready(holder: Holder, writer: Writer, settings: AppSettings) -> Response:
        """200 when a model is loaded and the inference store keeps up, 503 (with the reason) otherwise."""
        current = holder.current
        if current is None:
            return JSONResponse({"ready": False, "version": None, "detail": str(no_model(holder, settings))}, 503)
        problem = writer.problem()
        if problem is not None:
            return JSONResponse({"ready": False, "version": current.version, "detail": problem}, 503)
        return JSONResponse({"ready": True, "version": current.version, "detail": None})

    @router.get("/model", response_model=ModelInfoResponse)
    async def model(holder: Holder) -> Response:
        """Name, version, alias, run id, load time and the last reload error of the served model."""
        return JSONResponse(model_info(holder))

    prometheus: dict[int | str, dict[str, Any]] = {
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text."}
    }

    @router.get("/metrics", response_class=Response, responses=prometheus)
    async def metrics(metrics: Metrics, writer: Writer) -> Response:
        """Prometheus metrics: requests, latency, batch sizes, predictions by label, model version,
        build info, process and GC, the last drift check of each version (docs/serving.md)."""
        # in a thread: the drift series are read from the store at each scrape
        body = await run_in_threadpool(metrics.render, writer.pending, writer.store_up)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router


def admin_router() -> APIRouter:
    """POST /admin/reload, behind SENTOPS_ADMIN_TOKEN (only mounted when one is set)."""
    router = APIRouter(tags=["ops"], dependencies=[AdminAuth])

    @router.post("/admin/reload", response_model=ReloadResponse, responses=responses(401, 409))
    async def reload(holder: Holder) -> Response:
        """Resolve the alias now and (re)load its version (bearer token SENTOPS_ADMIN_TOKEN)."""
        before = holder.last_error
        changed = await run_in_threadpool(holder.check, True)
        err = holder.last_error
        if err is not None and err is not before:
            serving = holder.current
            still = f"still serving version {serving.version}" if serving else "no model is serving"
            raise HTTPException(409, f"cannot load version {err.version}: {err.error} ({still})")
        return JSONResponse({"changed": changed, "model": model_info(holder)})

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
