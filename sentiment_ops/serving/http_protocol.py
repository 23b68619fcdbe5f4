"""The HTTP protocol `sentops serve` runs: uvicorn's httptools protocol with a bound on a
request's head (request line and headers), ``MAX_HEAD_BYTES``.

uvicorn puts no limit on the head with httptools, and httptools gathers a header's value by
concatenating what arrives, so the cost grows with the square of its length, on the event
loop. Measured on 2 cores: one client sending a 100 MB header held every other client
(``GET /health`` took 2.4 s at the median, 7.5 s at worst, instead of ~1 ms), a 300 MB
header took 152 s to read and raised the server's memory by 580 MB. Here a head that passes
the bound gets a 431 with a one-line JSON ``detail`` and the connection is closed, before
more of it is parsed. The bound counts the bytes a connection receives while a head is
incomplete, up to the blank line that ends it (body bytes that arrive with it do not count).
64 KiB is four times what nginx accepts by default (four 8 KiB buffers)."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
_END = b"\r\n\r\n"


def too_large_head(limit: int) -> str:
    return f"request line and headers too large: more than {limit:,} bytes"


class HeadLimitProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http=HeadLimitProtocol)``."""

    max_head_bytes = MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes: int | None = 0  # of the head being received; None: in a body
        self._last = b""  # the end of the previous read: the blank line may straddle two reads
        self._refused = False

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0  # what arrives next is the next request's head

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._head_bytes is not None:
            end = (self._last + data).find(_END)
            self._head_bytes += len(data) if end < 0 else max(0, end + len(_END) - len(self._last))
            if self._head_bytes > self.max_head_bytes:
                self._refuse_head()
                return
        self._last = data[-(len(_END) - 1) :]
        super().data_received(data)

    def _refuse_head(self) -> None:
        self._refused = True
        detail = too_large_head(self.max_head_bytes)
        self.logger.warning("%s; connection closed", detail)
        body = ('{"detail":"' + detail + '"}').encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.transport.close()
