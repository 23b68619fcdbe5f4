"""Request ids: every HTTP request gets one, so a client's complaint can be traced to the
log lines and the stored prediction rows of that request.

A client (or a proxy in front) may send ``X-Request-Id``; it is kept when it is 1 to
``MAX_REQUEST_ID_CHARS`` visible ASCII characters (``!`` to ``~``: no spaces, no control
characters), and replaced by a fresh uuid4 hex otherwise (never refused: a bad id must not
cost the client its answer, and the id it gets back is the one stored). The id is answered
in the ``X-Request-Id`` header, held in a context variable while the request runs (the
JSON log lines carry it, ``serving/logs.py``) and in ``request.state.request_id`` for the
routes, which store it with every prediction row of the request."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from typing import Any

HEADER = "X-Request-Id"
MAX_REQUEST_ID_CHARS = 128  # the store's predictions.request_id column holds this many
_VALID = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_REQUEST_ID_CHARS)

current_request_id: ContextVar[str | None] = ContextVar("sentops_request_id", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def valid_request_id(raw: bytes | None) -> str | None:
    """The id a client sent, or None when it is missing or not acceptable."""
    if raw is None or not _VALID.fullmatch(raw):
        return None
    return raw.decode("ascii")


class RequestIdMiddleware:
    """Pure ASGI: sets the request id (given or new) before the app runs, answers it, with
    ``extra_headers`` that every answer carries (in the same step: no middleware of their own)."""

    def __init__(self, app: Any, extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.app = app
        self._header = HEADER.lower().encode("latin-1")
        self._extra = list(extra_headers or [])

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = [v for k, v in scope.get("headers", ()) if k.lower() == self._header]
        request_id = (valid_request_id(given[0]) if len(given) == 1 else None) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        token = current_request_id.set(request_id)
        added = [(self._header, request_id.encode("ascii")), *self._extra]

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != self._header]
                message = {**message, "headers": [*headers, *added]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)
