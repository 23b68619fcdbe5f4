"""The HTTP protocol `sentops serve` runs: uvicorn's httptools protocol with a bound on a
request's head (request line and headers), ``MAX_HEAD_BYTES``, a time for the head to arrive,
``HEAD_TIMEOUT_S``, one for a body that stalls, ``BODY_IDLE_TIMEOUT_S``, and a minimum rate for
a body, ``BODY_MIN_RATE``.

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
and is closed, and the request's handler sees the client gone.

A body must also keep up a minimum rate, ``BODY_MIN_RATE`` bytes a second after its first
``BODY_IDLE_TIMEOUT_S`` (Apache's ``mod_reqtimeout``, ``body=20,MinRate=500``, works the same
way): the time a body may take starts at ``BODY_IDLE_TIMEOUT_S`` and grows by a second for
every ``BODY_MIN_RATE`` bytes received, and again by ``BODY_IDLE_TIMEOUT_S`` whenever the
server itself has paused reading. Without it a client that sent a byte every 29 s held its
connection and handler for good (a 300 KB body for 100 days); with it such a client is
answered 408 and closed after ~30 s, while the largest valid batch body (~62 MB) may take 34
hours.

An answer given while the client is still sending (a 413 for a body past its limit, a 431)
is followed by a lingering close, as nginx's ``lingering_close``: the server stops sending,
reads and discards what still arrives, and closes when the client does, after
``LINGER_IDLE_S`` without a byte, or after ``LINGER_MAX_S`` in all. Closing at once, with the
client's bytes still arriving, makes the kernel reset the connection, and a client that sends
its whole body before it reads (Python's ``http.client``, so ``requests``) saw "connection
reset by peer" or "broken pipe" instead of the 413 for any body of 10 MB or more."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 30.0
BODY_IDLE_TIMEOUT_S = 30.0
BODY_MIN_RATE = 500  # bytes a second, after the first BODY_IDLE_TIMEOUT_S
LINGER_IDLE_S = 5.0  # nginx's lingering_timeout
LINGER_MAX_S = 30.0  # nginx's lingering_time
_END = b"\r\n\r\n"


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
