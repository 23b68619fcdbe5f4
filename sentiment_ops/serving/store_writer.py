"""Write-behind of served predictions: one thread drains a queue into batched inserts.

The event loop only appends to a queue; the thread writes up to ``max_batch`` rows per
transaction. A failed write is retried (the rows stay queued) and counted; ``close``
drains everything before the process exits, so a graceful shutdown loses nothing."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from sentiment_ops.errors import StoreError
from sentiment_ops.store import InferenceStore, PredictionRecord

log = logging.getLogger("sentiment_ops.serving")


class StoreWriter:
    def __init__(
        self,
        store: InferenceStore | None,
        max_batch: int = 512,
        on_write: Callable[[int, float], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store  # may be set later, before start() (the app opens it at startup)
        self.max_batch = max_batch
        self._on_write = on_write
        self._on_error = on_error
        self._queue: deque[PredictionRecord] = deque()
        self._cond = threading.Condition()
        self._enqueued = 0
        self._written = 0
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def written(self) -> int:
        return self._written

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sentops-store-writer", daemon=True)
            self._thread.start()

    def put(self, records: Sequence[PredictionRecord]) -> None:
        if not records:
            return
        with self._cond:
            self._queue.extend(records)
            self._enqueued += len(records)
            self._cond.notify_all()

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every record put so far is written. False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._enqueued
            while self._written < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float = 60.0) -> None:
        """Write everything still queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._queue:  # thread never started or gave up: last synchronous attempt
            self._write_pending(retries=3)
        if self._queue:
            log.error("inference store: %d predictions could not be written at shutdown", len(self._queue))

    def _take(self) -> list[PredictionRecord]:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            return [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]

    def _run(self) -> None:
        delay = 0.1
        while True:
            batch = self._take()
            if not batch:
                return  # closing and drained
            if self._write(batch):
                delay = 0.1
                continue
            with self._cond:  # keep the rows, in order, and try again
                self._queue.extendleft(reversed(batch))
                closing = self._closing
            if closing and delay > 2.0:
                return  # close() makes the last attempts and reports what is left
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _write(self, batch: list[PredictionRecord]) -> bool:
        t0 = time.perf_counter()
        if self.store is None:
            raise RuntimeError("StoreWriter has no store")
        try:
            self.store.add_predictions(batch)
        except StoreError as exc:
            log.error("inference store write of %d rows failed (will retry): %s", len(batch), exc)
            if self._on_error is not None:
                self._on_error(str(exc))
            return False
        with self._cond:
            self._written += len(batch)
            self._cond.notify_all()
        if self._on_write is not None:
            self._on_write(len(batch), time.perf_counter() - t0)
        return True

    def _write_pending(self, retries: int) -> None:
        for attempt in range(retries):
            with self._cond:
                batch = list(self._queue)
            if not batch:
                return
            for start in range(0, len(batch), self.max_batch):
                chunk = batch[start : start + self.max_batch]
                if not self._write(chunk):
                    break
                with self._cond:
                    for _ in chunk:
                        self._queue.popleft()
            else:
                return
            time.sleep(0.5 * (attempt + 1))
