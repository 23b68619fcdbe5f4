"""The HTTP protocol `sentops serve` runs: uvicorn's httptools protocol with a bound on a
request's head (request line and headers), ``MAX_HEAD_BYTES``, a time for the head to arrive,
``HEAD_TIMEOUT_S``, and one for a body that stalls, ``BODY_IDLE_TIMEOUT_S``.

uvicorn puts no limit on the head with httptools, and httptools gathers a header's value by
concatenating what arrives, so the cost grows with the square of its length, on the event
loop. Measured on 2 cores: one client sending a 100 MB header held every other client
(``GET /health`` took 2.4 s at the median, 7.5 s at worst, instead of ~1 ms), a 300 MB
header took 152 s to read and raised the server's memory by 580 MB. Here a head that passes
the bound gets a 431 with a one-line JSON ``detail`` and the connection is closed, before
more of it is parsed. The bound counts the bytes a connection receives while a head is
incomplete, up to the blank line that ends it (body bytes that arrive with it do not count).
64 KiB is four times what nginx accepts by default (four 8 KiB buffers).

A head must also arrive within ``HEAD_TIMEOUT_S`` of its first byte (of the connection, for
the first request): uvicorn times out a connection only while it is idle between requests,
so one that never sends a head, or sends it a byte at a time, was held for good (400 such
connections, opened and left, were all still open 20 s later; each holds a file descriptor
until the process has none left). On time-out the connection gets a 408 and is closed;
nginx waits 60 s (``client_header_timeout``), a client on a slow link sends a head in one
packet.

A body must not stall for ``BODY_IDLE_TIMEOUT_S`` between two reads (nginx's
``client_body_timeout``, 60 s by default, works the same way): a client that announced a body
and stopped sending held its connection and the request's handler for good. The time counts
from the last byte received, and not while the server itself has paused reading (a request
pipelined behind another, a body the handler has not taken yet), so a large upload on a slow
link is not cut; on time-out the connection gets a 408 (when nothing has been answered yet)
and is closed, and the request's handler sees the client gone."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 30.0
BODY_IDLE_TIMEOUT_S = 30.0
_END = b"\r\n\r\n"


def too_large_head(limit: int) -> str:
    return f"request line and headers too large: more than {limit:,} bytes"


def head_too_slow(timeout_s: float) -> str:
    return f"request line and headers not received within {timeout_s:g} s"


def body_stalled(timeout_s: float) -> str:
    return f"request body stalled: nothing received for {timeout_s:g} s"


class HeadLimitProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http=HeadLimitProtocol)``; the bound and the times are class
    attributes (the tests' subclass shortens the times)."""

    max_head_bytes = MAX_HEAD_BYTES
    head_timeout_s = HEAD_TIMEOUT_S
    body_timeout_s = BODY_IDLE_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes: int | None = 0  # of the head being received; None: in a body
        self._last = b""  # the end of the previous read: the blank line may straddle two reads
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None  # while a request's body is awaited
        self._last_read = 0.0
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_body_timer()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._stop_head_timer()
        super().on_headers_complete()
        # cancelled by on_message_complete: at once for a request without a body
        self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_idle)

    def on_message_complete(self) -> None:
        self._stop_body_timer()
        super().on_message_complete()
        self._head_bytes = 0  # what arrives next is the next request's head

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._last_read = self.loop.time()
        if self._head_bytes is not None:
            if self._head_timer is None:  # the first byte of a head on a kept-alive connection
                self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)
            end = (self._last + data).find(_END)
            self._head_bytes += len(data) if end < 0 else max(0, end + len(_END) - len(self._last))
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, "Request Header Fields Too Large", too_large_head(self.max_head_bytes))
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
        """A body has been awaited ``body_timeout_s``: wait on while bytes keep coming or the
        server itself does not read."""
        self._body_timer = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # the wait is the server's, not the client's
            self._last_read = self.loop.time()
        idle = self.loop.time() - self._last_read
        if idle < self.body_timeout_s:
            self._body_timer = self.loop.call_later(self.body_timeout_s - idle, self._body_idle)
            return
        answered = self.cycle is not None and self.cycle.response_started  # an answer under way: just close
        self._refuse(408, "Request Timeout", body_stalled(self.body_timeout_s), answer=not answered)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._refuse(408, "Request Timeout", head_too_slow(self.head_timeout_s))

    def _refuse(self, status: int, phrase: str, detail: str, answer: bool = True) -> None:
        """Answer ``status`` with ``detail`` (unless ``answer`` is False: one is under way),
        then close; nothing more of this connection is read."""
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
        self.transport.close()
