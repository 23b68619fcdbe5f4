"""Request body limits: a body larger than any valid request of its route is refused with
a 413 and a one-line ``detail``, before it is read when its ``Content-Length`` says so, or
as soon as the bytes received pass the limit (a chunked body). Both are raised from
``receive``, when the route's handler reads the body: a request whose handler does not read
one (a GET, a 404) is answered as it would be, and the body it was sent is discarded.
Without them the server would read and parse any body whole before validation refused it,
holding the event loop and the body's memory (a few large bodies at once would take a
container's memory).

The limits follow the text limits, so no valid request is ever refused: a text of
``serve.max_text_chars`` characters takes at most ``BYTES_PER_CHAR`` bytes as JSON (a
character outside the Basic Multilingual Plane escaped as two ``\\uXXXX``), plus room for
the field names, whitespace and, for /invocations, other columns. Routes without texts
(/feedback, /admin/reload, the labeling page) take ``OTHER_LIMIT`` bytes.

The text routes are also admitted (``Admission``): at most ``serve.max_concurrent_requests``
of them at once, whose bodies (``Content-Length``, or the route's limit for a chunked body)
add up to at most ``serve.max_inflight_mb``. A request past either bound gets a 503 with
``Retry-After`` when its handler first reads, before any of its body is read: what a
request holds in memory (its body, its texts parsed, its answer) is bounded by its body,
so the server's memory is bounded whatever the clients send at once."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

BYTES_PER_CHAR = 12  # "\ud83d\ude00": one character, 12 bytes of JSON
ITEM_SLACK = 1024  # per text: its quotes, a field name, other columns of an /invocations row
BODY_SLACK = 64 * 1024  # per body: the envelope and whitespace
OTHER_LIMIT = 64 * 1024


def body_limits(max_text_chars: int, max_batch_items: int) -> dict[str, int]:
    """The largest body each text route accepts, in bytes."""
    text = max_text_chars * BYTES_PER_CHAR + ITEM_SLACK
    many = max_batch_items * text + BODY_SLACK
    return {"/predict": text + BODY_SLACK, "/predict/batch": many, "/invocations": many}


class BodyTooLargeError(HTTPException):
    """Raised from ``receive`` when a body passes its route's limit: FastAPI lets an
    ``HTTPException`` from reading the body through, and the app answers it as any other."""

    def __init__(self, path: str, limit: int, size: int | None, texts: bool) -> None:
        super().__init__(413, too_large(path, limit, size, texts), headers={"Connection": "close"})


def too_large(path: str, limit: int, size: int | None, texts: bool = True) -> str:
    """The 413's detail; ``texts``: the route takes texts, its limit follows the settings."""
    got = f"{size:,} bytes, at most {limit:,}" if size is not None else f"more than {limit:,} bytes"
    return f"request body too large: {got} on {path}" + (
        " (set by serve.max_text_chars and serve.max_batch_items)" if texts else ""
    )


OVERLOADED_RETRY_AFTER_S = "2"


class OverloadedError(HTTPException):
    """Raised from ``receive`` for a text request that was not admitted (503)."""

    def __init__(self, why: str) -> None:
        headers = {"Retry-After": OVERLOADED_RETRY_AFTER_S, "Connection": "close"}
        super().__init__(503, f"server busy: {why}; retry later", headers=headers)


class Admission:
    """What the text routes hold at once: requests and their body bytes. Used on the
    event loop only (no lock). A request is admitted while fewer than ``max_requests`` run
    and its bytes fit in ``max_bytes``; the first request is always admitted (a body limit
    above ``max_bytes`` still lets one through at a time)."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0

    def refusal(self, size: int) -> str | None:
        """Why a request of ``size`` body bytes cannot be admitted now, or None (admitted:
        hand back with ``release(size)``)."""
        if self.requests >= self.max_requests:
            return f"{self.requests} requests in progress (serve.max_concurrent_requests)"
        if self.requests and self.bytes + size > self.max_bytes:
            return f"{self.bytes:,} bytes of requests in progress (serve.max_inflight_mb)"
        self.requests += 1
        self.bytes += size
        return None

    def release(self, size: int) -> None:
        self.requests -= 1
        self.bytes -= size


class BodyLimitMiddleware:
    """Pure ASGI; ``limits`` by exact path (the text routes, admitted by ``admission``
    when given), ``default`` for every other path."""

    def __init__(
        self, app: Any, limits: dict[str, int], default: int = OTHER_LIMIT, admission: Admission | None = None
    ) -> None:
        self.app = app
        self.limits = limits
        self.default = default
        self.admission = admission

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.limits.get(path, self.default)
        texts = path in self.limits
        declared = _content_length(scope)
        received = 0
        size = min(limit, declared if declared is not None else limit)
        refused = None
        admitted = texts and self.admission is not None and (declared is None or declared <= limit)
        if admitted:
            assert self.admission is not None
            refused = self.admission.refusal(size)
            admitted = refused is None

        async def limited() -> dict[str, Any]:
            nonlocal received
            if refused is not None:
                raise OverloadedError(refused)  # unread, as the 413 below
            if declared is not None and declared > limit:
                # Refused unread, when the route's handler first reads (so the refusal is
                # the route's, in metrics and logs); the client may still be sending, so
                # the connection closes.
                raise BodyTooLargeError(path, limit, declared, texts)
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(path, limit, None, texts)
            return message

        try:
            await self.app(scope, limited, send)
        finally:
            if admitted:
                assert self.admission is not None
                self.admission.release(size)


def _content_length(scope: dict[str, Any]) -> int | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses it before the app runs
    return None
