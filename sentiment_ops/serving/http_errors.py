"""How the server answers errors, and how the OpenAPI document declares them: every error
body is ``{"detail": "<one line>"}`` (a 422 adds ``errors``, one entry per field).

``sentops_error`` maps the ``SentopsError`` tree to HTTP statuses (``PUBLIC_ERRORS``); an
error whose own message may name hosts or paths (the store's, the registry's) is answered
in plain words and logged, with credentials masked. ``responses`` builds a route's declared
error answers; ``APP_ERRORS`` are those any route may answer (the HTTP protocol's 408 and
431, an unexpected 500)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sentiment_ops.errors import DataError, NotFoundError, RegistryUnavailableError, SentopsError, StoreError
from sentiment_ops.redaction import redact
from sentiment_ops.serving.batcher import ModelUnavailableError
from sentiment_ops.serving.request_ids import HEADER
from sentiment_ops.serving.schemas import ErrorResponse, ValidationErrorResponse
from sentiment_ops.serving.store_writer import QueueFullError

log = logging.getLogger("sentiment_ops.serving")

STORE_RETRY_AFTER_S = "5"  # the writer retries a failing store every 2 s at most

# The first match wins: (class, status, the public detail or None for the error's own
# message, Retry-After or None). Any other SentopsError is a 500, as an unexpected error.
PUBLIC_ERRORS: tuple[tuple[type[SentopsError], int, str | None, str | None], ...] = (
    (QueueFullError, 503, None, STORE_RETRY_AFTER_S),
    (ModelUnavailableError, 503, None, None),
    (NotFoundError, 404, None, None),
    (DataError, 422, None, None),
    (StoreError, 503, "inference store unavailable; retry later", STORE_RETRY_AFTER_S),
    (RegistryUnavailableError, 503, "the model registry is unavailable; retry later", None),
)

DESCRIPTIONS: dict[int, str] = {
    400: "The body cannot be parsed: not UTF-8, or JSON nested too deeply.",
    401: "No or a wrong bearer token (`WWW-Authenticate: Bearer`).",
    403: "The server has no such token (SENTOPS_FEEDBACK_TOKEN): the route refuses everyone.",
    404: "Unknown prediction id.",
    408: "The request line and headers, or the body, did not arrive in time; the connection is closed.",
    409: "The version cannot be loaded (the old one keeps serving).",
    413: "The body is larger than any valid request of this route; the connection is closed.",
    422: "Invalid input: `detail` says what in one line, `errors` (when given) per field.",
    431: "The request line and headers are larger than 64 KiB; the connection is closed.",
    500: "An unexpected error (details in the server log).",
    503: "Unavailable for now (Retry-After when the store or the server is busy).",
}


def responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """The declared error answers of a route: ``statuses`` with their default description,
    or the one given as ``descriptions["e<status>"]``."""
    return {
        status: {
            "model": ValidationErrorResponse if status == 422 else ErrorResponse,
            "description": descriptions.get(f"e{status}", DESCRIPTIONS[status]),
        }
        for status in statuses
    }


APP_ERRORS = responses(408, 431, 500)
BODY_ERRORS = (400, 413, 422)  # any route with a JSON body


def install(app: FastAPI) -> None:
    """The app's exception handlers."""
    app.add_exception_handler(SentopsError, sentops_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected)


async def sentops_error(request: Request, exc: SentopsError) -> JSONResponse:
    for cls, status, public, retry_after in PUBLIC_ERRORS:
        if isinstance(exc, cls):
            if public is not None:  # the error's own message goes to the log only
                log.error("%s %s failed: %s", request.method, request.url.path, redact(str(exc)))
            headers = {"Retry-After": retry_after} if retry_after else None
            return JSONResponse({"detail": public or str(exc)}, status_code=status, headers=headers)
    raise exc  # answered by ``unexpected``, outside the middlewares, as any other error


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
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


async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 400:  # FastAPI's "There was an error parsing the body": say why
        cause = exc.__cause__
        if isinstance(cause, UnicodeDecodeError):
            detail = f"request body is not UTF-8 ({cause.reason} at byte {cause.start})"
        elif isinstance(cause, RecursionError):
            detail = "request body is not valid JSON (nested too deeply)"
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette answers this outside every middleware: the request id is set here again
    request_id = getattr(request.state, "request_id", None)
    log.error(
        "unexpected error on %s %s", request.method, request.url.path, exc_info=exc, extra={"request_id": request_id}
    )
    headers = {"X-Content-Type-Options": "nosniff", **({HEADER: request_id} if request_id else {})}
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500, headers=headers)
