"""The HTTP protocol `sentops serve` runs: uvicorn's httptools protocol with the protections
it lacks, each answered with a one-line JSON ``detail`` and a closed connection:

* a bound on a request's head (request line and headers), ``MAX_HEAD_BYTES``: 431. httptools
  gathers a header by concatenation, at a cost that grows with its square, on the event loop;
* a time for the head to arrive, ``HEAD_TIMEOUT_S``, one for a body that stalls,
  ``BODY_IDLE_TIMEOUT_S``, and a minimum body rate, ``BODY_MIN_RATE``: 408. uvicorn times out
  only idle connections, so a slow client would hold a connection and a handler for good;
* a lingering close after an answer given while the client still sends (a 413, a 431), so
  the client reads its answer instead of a connection reset.

It subclasses uvicorn's private ``HttpToolsProtocol``: ``check_uvicorn`` verifies at start-up
that what it relies on is there (pyproject.toml pins the uvicorn versions it is tested on).
docs/serving.md has the figures."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from sentiment_ops.errors import SentopsError

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 30.0
BODY_IDLE_TIMEOUT_S = 30.0
BODY_MIN_RATE = 500  # bytes a second, after the first BODY_IDLE_TIMEOUT_S
LINGER_IDLE_S = 5.0  # nginx's lingering_timeout
LINGER_MAX_S = 30.0  # nginx's lingering_time
_END = b"\r\n\r\n"


# What HeadLimitProtocol relies on in uvicorn's private classes: the methods it overrides
# (each calls the base's; the parser calls the on_* hooks by name) or calls, and the
# attributes it reads, which the classes' __init__ (or connection_made) set.
OVERRIDDEN = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "shutdown",
)
PROTOCOL_ATTRIBUTES = ("loop", "logger", "cycle", "transport", "flow")
FLOW_ATTRIBUTES = ("read_paused",)
CYCLE_ATTRIBUTES = ("response_started",)


def _missing(cls: type, methods: tuple[str, ...], attributes: tuple[str, ...], setters: tuple[str, ...]) -> list[str]:
    """The names of ``methods`` that ``cls`` lacks, and of ``attributes`` that none of its
    ``setters`` (methods) assigns (their code's names: the attributes exist per instance)."""
    gone = [f"{cls.__name__}.{m}()" for m in methods if not callable(getattr(cls, m, None))]
    assigned: set[str] = set()
    for setter in setters:
        code = getattr(getattr(cls, setter, None), "__code__", None)
        assigned.update(code.co_names if code is not None else ())
    return gone + [f"{cls.__name__}.{a}" for a in attributes if a not in assigned]


def check_uvicorn(
    protocol: type = HttpToolsProtocol, flow: type = FlowControl, cycle: type = RequestResponseCycle
) -> None:
    """SentopsError (one line) when the installed uvicorn lacks what ``HeadLimitProtocol``
    relies on: the server must refuse to start rather than serve without its protections or
    fail at every request. Called when the app is built."""
    missing = (
        _missing(protocol, OVERRIDDEN, PROTOCOL_ATTRIBUTES, ("__init__", "connection_made"))
        + _missing(flow, ("resume_reading",), FLOW_ATTRIBUTES, ("__init__",))
        + _missing(cycle, (), CYCLE_ATTRIBUTES, ("__init__",))
    )
    if missing:
        raise SentopsError(
            f"uvicorn {uvicorn.__version__} is not supported by sentops serve's HTTP protocol: it has no "
            f"{', '.join(missing)} (install the uvicorn version pyproject.toml names)"
        )


def too_large_head(limit: int) -> str:
    return f"request line and headers too large: more than {limit:,} bytes"


def head_too_slow(timeout_s: float) -> str:
    return f"request line and headers not received within {timeout_s:g} s"


def body_stalled(timeout_s: float) -> str:
    return f"request body stalled: nothing received for {timeout_s:g} s"


def body_too_slow(min_rate: float, timeout_s: float) -> str:
    return f"request body too slow: less than {min_rate:g} bytes/s after its first {timeout_s:g} s"


class _LingeringTransport:
    """The transport as uvicorn's protocol and request cycles see it: ``close`` while a
    request's body is still arriving becomes a lingering close, and ``is_closing`` is true
    from then on; everything else is the transport's own."""

    def __init__(self, transport: asyncio.Transport, protocol: HeadLimitProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:  # every answer: no __getattr__
        self._transport.write(data)

    def close(self) -> None:
        self._protocol._close()

    def is_closing(self) -> bool:
        return self._protocol._lingering is not None or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeadLimitProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http=HeadLimitProtocol)``; the bound and the times are class
    attributes (the tests' subclass shortens the times)."""

    max_head_bytes = MAX_HEAD_BYTES
    head_timeout_s = HEAD_TIMEOUT_S
    body_timeout_s = BODY_IDLE_TIMEOUT_S
    body_min_rate = BODY_MIN_RATE
    linger_idle_s = LINGER_IDLE_S
    linger_max_s = LINGER_MAX_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes: int | None = 0  # of the head being received; None: in a body
        self._last = b""  # the end of the previous read: the blank line may straddle two reads
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None  # while a request's body is awaited
        self._last_read = 0.0
        self._body_deadline = 0.0  # the loop time by which the body must have arrived
        self._refused = False
        self._raw: asyncio.Transport | None = None
        self._lingering: asyncio.TimerHandle | None = None  # while closing lingers
        self._linger_end = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._raw = transport
        self.transport = cast(asyncio.Transport, _LingeringTransport(transport, self))
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_body_timer()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._stop_head_timer()
        super().on_headers_complete()
        # cancelled by on_message_complete: at once for a request without a body
        self._body_deadline = self.loop.time() + self.body_timeout_s
        self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_idle)

    def on_body(self, body: bytes) -> None:
        self._body_deadline += len(body) / self.body_min_rate
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._stop_body_timer()
        super().on_message_complete()
        self._head_bytes = 0  # what arrives next is the next request's head

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        if self._refused:
            return  # discarded: answered, closing
        if self._head_bytes is not None:
            if self._head_timer is None:  # the first byte of a head on a kept-alive connection
                self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)
            end = (self._last + data).find(_END)
            self._head_bytes += len(data) if end < 0 else max(0, end + len(_END) - len(self._last))
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, "Request Header Fields Too Large", too_large_head(self.max_head_bytes), linger=True)
                return
        self._last = data[-(len(_END) - 1) :]
        super().data_received(data)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_idle(self) -> None:
        """A body has been awaited ``body_timeout_s`` since its last byte, or until its
        deadline: wait on while bytes keep coming at the minimum rate or the server itself
        does not read."""
        self._body_timer = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # the wait is the server's, not the client's
            self._last_read = now = self.loop.time()
            self._body_deadline = max(self._body_deadline, now + self.body_timeout_s)
        wait = self._wait_left(self.body_timeout_s, self._body_deadline)
        if wait > 0:
            self._body_timer = self.loop.call_later(wait, self._body_idle)
            return
        if self.loop.time() - self._last_read >= self.body_timeout_s:
            detail = body_stalled(self.body_timeout_s)
        else:
            detail = body_too_slow(self.body_min_rate, self.body_timeout_s)
        answered = self.cycle is not None and self.cycle.response_started  # an answer under way: just close
        self._refuse(408, "Request Timeout", detail, answer=not answered)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._refuse(408, "Request Timeout", head_too_slow(self.head_timeout_s))

    def _refuse(self, status: int, phrase: str, detail: str, answer: bool = True, linger: bool = False) -> None:
        """Answer ``status`` with ``detail`` (unless ``answer`` is False: one is under way),
        then close, lingering when the client is still sending (``linger``); nothing more of
        this connection is parsed."""
        self._refused = True
        self._stop_head_timer()
        self._stop_body_timer()
        self.logger.warning("%s; connection closed", detail)
        if answer:
            body = ('{"detail":"' + detail + '"}').encode()
            self.transport.write(
                f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\nconnection: close\r\n".encode()
                + b"content-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
        if linger:
            self._linger()
        else:
            self._close_now()

    def shutdown(self) -> None:
        """The server is stopping: a lingering connection closes now."""
        if self._lingering is not None:
            self._close_now()
            return
        super().shutdown()

    def _close(self) -> None:
        """uvicorn closes: at once, unless a request's body is still arriving."""
        if self._lingering is not None or self._raw is None or self._raw.is_closing():
            return
        if self._head_bytes is None and not self._refused:  # in a body: answered before it ended
            self._linger()
        else:
            self._close_now()

    def _close_now(self) -> None:
        if self._lingering is not None:
            self._lingering.cancel()
            self._lingering = None
        if self._raw is not None:
            self._raw.close()

    def _linger(self) -> None:
        """Stop sending (after what is written), read and discard, close when the client does
        or is quiet ``linger_idle_s``, or after ``linger_max_s``."""
        assert self._raw is not None
        self._refused = True
        self._stop_head_timer()
        self._stop_body_timer()
        if self._raw.can_write_eof():
            self._raw.write_eof()
        self.flow.resume_reading()  # the body may have filled the buffer: read on, to discard
        self._last_read = now = self.loop.time()
        self._linger_end = now + self.linger_max_s
        self._lingering = self.loop.call_later(self.linger_idle_s, self._linger_check)

    def _linger_check(self) -> None:
        wait = self._wait_left(self.linger_idle_s, self._linger_end)
        if wait > 0:
            self._lingering = self.loop.call_later(wait, self._linger_check)
        else:
            self._close_now()

    def _wait_left(self, quiet_s: float, deadline: float) -> float:
        """Seconds until the connection has received nothing for ``quiet_s`` or ``deadline``
        (loop time) passes, whichever comes first; ≤ 0 when one has."""
        now = self.loop.time()
        return min(self._last_read + quiet_s, deadline) - now
