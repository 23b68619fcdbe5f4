"""Write-behind of served predictions: one thread drains a bounded queue into batched inserts.

The event loop only appends to a queue; the thread writes up to ``max_batch`` rows per
transaction. Two kinds of failure are told apart:

- the store is down (connection refused or lost, a missing table: ``StoreUnavailableError``):
  the rows stay queued, in order, and the write is retried with backoff (0.1 s doubling to
  2 s) until it works; ``store_up`` is False meanwhile;
- the store refuses a row's data (``StoreRowError``, e.g. PostgreSQL's "text fields cannot
  contain NUL"): the batch is split in halves until the refused rows are alone; the others
  are written, each refused row goes to the ``dead_letters`` table with its error.

The queue is bounded: a request reserves room for its rows before it is predicted
(``reserve``), and a request that finds no room is refused (the API answers 503), so every
row of a 2xx answer is either stored or dead-lettered, never dropped, and memory stays
bounded: by rows (``max_queue``) and by the characters of their texts (``max_text_chars``:
a row holds its text until it is written, and texts may be long).
``close`` drains what it can before the process exits and logs the count of rows
that could not be written."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sentiment_ops.config import ServeSettings
from sentiment_ops.errors import StoreError, StoreRowError, StoreUnavailableError
from sentiment_ops.redaction import redact
from sentiment_ops.store import PredictionLog, PredictionRecord, dead_letter

log = logging.getLogger("sentiment_ops.serving")

RETRY_MIN_S = 0.1
RETRY_MAX_S = 2.0  # a store back after an outage is noticed within 2 s
SLOW_WRITE_S = 10.0  # a write in flight this long makes /ready say the store is stuck


class QueueFullError(StoreUnavailableError):
    """The write-behind queue has no room for more rows (the store is down or too slow)."""


@dataclass(frozen=True)
class WriterLimits:
    """How much the writer holds and when it is behind: rows per transaction (``max_batch``),
    rows queued (``max_queue``) and characters of their texts (``max_text_chars``, None: no
    bound), the share of ``max_queue`` past which ``problem`` reports it (``high_water``),
    and how long a write may be in flight before it does (``slow_write_s``)."""

    max_batch: int = 512
    max_queue: int = 20_000
    max_text_chars: int | None = None
    high_water: float = 0.8
    slow_write_s: float = SLOW_WRITE_S

    @classmethod
    def from_settings(cls, serve: ServeSettings) -> WriterLimits:
        """The server's limits: ``serve.store_queue_max`` rows, ``serve.store_queue_max_mb`` of
        text (4 bytes a character at most)."""
        return cls(max_queue=serve.store_queue_max, max_text_chars=serve.store_queue_max_mb * 1024 * 1024 // 4)


class StoreWriter:
    def __init__(
        self,
        store: PredictionLog | None,
        limits: WriterLimits = WriterLimits(),
        on_write: Callable[[int, float], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_dead_letter: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store  # may be set later, before start() (the app opens it at startup)
        self.max_batch = limits.max_batch
        self.max_queue = limits.max_queue
        self.max_text_chars = limits.max_text_chars
        self.high_water = max(1, int(limits.max_queue * limits.high_water))
        self.slow_write_s = limits.slow_write_s
        self._on_write = on_write
        self._on_error = on_error
        self._on_dead_letter = on_dead_letter
        self._queue: deque[PredictionRecord] = deque()
        self._cond = threading.Condition()
        self._reserved = 0
        self._text = 0  # characters of the texts of the rows not yet written
        self._reserved_text = 0
        self._in_flight = 0  # rows taken off the queue by the write under way
        self._enqueued = 0
        self._written = 0
        self._dead = 0
        self._lost = 0  # refused rows whose dead letter was refused too (logged one by one)
        self._closing = False
        self._thread: threading.Thread | None = None
        self.store_up = True
        self.last_error: str | None = None
        self._write_since: float | None = None  # monotonic start of the write in flight

    @property
    def pending(self) -> int:
        """Rows not yet written: queued, or in the write under way (until it succeeds or
        puts them back)."""
        return len(self._queue) + self._in_flight

    @property
    def written(self) -> int:
        return self._written

    @property
    def dead_lettered(self) -> int:
        return self._dead

    def problem(self) -> str | None:
        """Why the server should not get traffic now (the store is failing, or the queue is
        past its high-water mark), or None."""
        pending = self.pending
        if not self.store_up:
            # the store's own error (host names) is in the log, not in this public text
            return f"inference store unavailable; {pending} predictions queued"
        if pending + self._reserved >= self.high_water:
            return f"inference store is behind: {pending} of at most {self.max_queue} predictions queued"
        since = self._write_since
        if since is not None and time.monotonic() - since > self.slow_write_s:
            return f"inference store write in flight for {time.monotonic() - since:.0f} s; {pending} predictions queued"
        return None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sentops-store-writer", daemon=True)
            self._thread.start()

    def reserve(self, n: int, chars: int = 0) -> None:
        """Hold room for ``n`` rows (of ``chars`` characters of text) about to be predicted;
        QueueFullError when there is none. Release it with ``release(n, chars)`` once the
        rows are queued (or will never be). Texts past ``max_text_chars`` still pass when
        nothing else waits, so a request within the text limits is never refused for good."""
        with self._cond:
            if self.pending + self._reserved + n > self.max_queue:
                raise QueueFullError(
                    f"the inference store cannot keep up: {self.pending} predictions wait to be written "
                    f"(serve.store_queue_max {self.max_queue}); retry later"
                )
            text = self._text + self._reserved_text
            if self.max_text_chars is not None and text and text + chars > self.max_text_chars:
                raise QueueFullError(
                    f"the inference store cannot keep up: {self.pending} predictions with {text:,} characters "
                    "of text wait to be written (serve.store_queue_max_mb); retry later"
                )
            self._reserved += n
            self._reserved_text += chars

    def release(self, n: int, chars: int = 0) -> None:
        with self._cond:
            self._reserved = max(0, self._reserved - n)
            self._reserved_text = max(0, self._reserved_text - chars)

    def put(self, records: Sequence[PredictionRecord]) -> None:
        if not records:
            return
        chars = _chars(records)
        with self._cond:
            self._text += chars
            self._queue.extend(records)
            self._enqueued += len(records)
            self._cond.notify_all()

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every record put so far is written (or dead-lettered). False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._enqueued
            while self._written + self._dead + self._lost < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float = 60.0) -> int:
        """Write everything still queued, then stop the thread. Returns (and logs) how many
        rows could not be written."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._queue:  # thread never started or gave up: last synchronous attempts
            for attempt in range(3):
                if self._drain_once():
                    break
                time.sleep(0.5 * (attempt + 1))
        left = len(self._queue)
        if left:
            log.error(
                "inference store: %d predictions could not be written at shutdown (last error: %s)",
                left,
                self.last_error,
            )
        return left

    def _take(self) -> list[PredictionRecord]:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            return self._pop_batch()

    def _pop_batch(self) -> list[PredictionRecord]:
        """Up to ``max_batch`` rows off the queue, counted in flight (hold ``_cond``)."""
        batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
        self._in_flight = len(batch)
        return batch

    def _requeue(self, rows: list[PredictionRecord]) -> None:
        """Put rows the store could not take back at the front, in order."""
        with self._cond:
            self._queue.extendleft(reversed(rows))
            self._in_flight = 0

    def _run(self) -> None:
        delay = RETRY_MIN_S
        while True:
            batch = self._take()
            if not batch:
                return  # closing and drained
            left = self._write(batch)
            if not left:
                delay = RETRY_MIN_S
                continue
            self._requeue(left)  # keep the rows, in order, and try again
            with self._cond:
                closing = self._closing
            if closing and delay >= RETRY_MAX_S:
                return  # close() makes the last attempts and reports what is left
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    def _drain_once(self) -> bool:
        """Write the whole queue synchronously; False when the store is still down."""
        while self._queue:
            with self._cond:
                batch = self._pop_batch()
            left = self._write(batch)
            if left:
                self._requeue(left)
                return False
        return True

    def _write(self, batch: list[PredictionRecord]) -> list[PredictionRecord]:
        """Write ``batch``, splitting it around refused rows. Returns the rows not written
        because the store is down (to be queued again), in order."""
        if self.store is None:
            raise RuntimeError("StoreWriter has no store")
        chunks = [batch]
        while chunks:
            chunk = chunks.pop(0)
            t0 = time.perf_counter()
            self._write_since = time.monotonic()
            try:
                self.store.add_predictions(chunk, skip_existing=True)
            except StoreRowError as exc:
                if len(chunk) > 1:
                    mid = len(chunk) // 2
                    chunks[:0] = [chunk[:mid], chunk[mid:]]
                    continue
                if not self._dead_letter(chunk[0], str(exc)):
                    return [*chunk, *(r for c in chunks for r in c)]
                continue
            except StoreError as exc:
                self._failed(len(chunk), exc)
                return [*chunk, *(r for c in chunks for r in c)]
            except Exception as exc:  # the writer thread must not die with rows queued
                log.exception("inference store write failed unexpectedly (kept queued, retrying)")
                self._failed(len(chunk), StoreError(f"unexpected {type(exc).__name__}: {exc}"))
                return [*chunk, *(r for c in chunks for r in c)]
            finally:
                self._write_since = None
            self._done(written=len(chunk), chars=_chars(chunk))
            if self._on_write is not None:
                self._on_write(len(chunk), time.perf_counter() - t0)
        return []

    def _dead_letter(self, record: PredictionRecord, error: str) -> bool:
        assert self.store is not None
        try:
            # with store_text off, no text in the dead letter either (its hash only)
            self.store.add_dead_letters([("prediction", error, dead_letter(record, self.store.store_text))])
        except StoreRowError as exc:  # cannot happen for ASCII JSON; never silent if it does
            log.error(
                "inference store refused prediction %s and its dead letter: %s / %s",
                record.id,
                error,
                exc,
                extra={"request_id": record.request_id},
            )
            self._done(lost=1, chars=len(record.text))
            return True
        except StoreError as exc:
            self._failed(1, exc)
            return False
        log.warning(
            "inference store refused prediction %s (kept in dead_letters): %s",
            record.id,
            error,
            extra={"request_id": record.request_id},  # the log line of the request that asked for it
        )
        self._done(dead=1, chars=len(record.text))
        if self._on_dead_letter is not None:
            self._on_dead_letter(1)
        return True

    def _done(self, written: int = 0, dead: int = 0, lost: int = 0, chars: int = 0) -> None:
        with self._cond:
            self._text = max(0, self._text - chars)
            self._written += written
            self._dead += dead
            self._lost += lost
            self._in_flight = max(0, self._in_flight - written - dead - lost)
            if not self.store_up:
                log.info("inference store is back: %d predictions queued", len(self._queue))
            self.store_up = True
            self.last_error = None
            self._cond.notify_all()

    def _failed(self, rows: int, exc: StoreError) -> None:
        if self.store_up:
            log.error("inference store write of %d rows failed (kept queued, retrying): %s", rows, redact(str(exc)))
        self.store_up = False
        self.last_error = redact(str(exc))
        if self._on_error is not None:
            self._on_error(str(exc))


def _chars(records: Sequence[PredictionRecord]) -> int:
    return sum(len(r.text) for r in records)
