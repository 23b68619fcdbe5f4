"""Micro-batching: concurrent requests share one forward pass, off the event loop.

Each text becomes an item with a future, queued first come first served. Each inference
thread takes its own batches (``_take``): the first waiting item, then more in arrival order
until ``batch_max_size`` items or ``batch_max_wait_ms`` have passed (the wait only when its
previous batch held more than one text: a single client is never delayed) and, with several
threads, until the batch holds a fair share of what waits or about one pass of
``batch_max_tokens``. A thread hands a batch's answers to the event loop (one
``call_soon_threadsafe``) and takes the next batch at once, never waiting for the loop,
which under load is busy with HTTP; batches grow with load by themselves. In the thread the
batch is tokenised, sorted by length and split where padding would add more than half the
work or a pass would exceed ``batch_max_tokens``; each pass is padded only to its own
longest text (``inference.forward_grouped``) and gives label, probability and the pooled
embedding; the records go to the store writer. With ``workers`` > 1 (ONNX) that many
batches run at once, each pass on one thread (no cross-thread barrier per operator); a
batch that runs alone may take the predictor's many-thread session when that is measured
faster (``ThreadChooser``)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

import numpy as np

from sentiment_ops.errors import SentopsError
from sentiment_ops.inference.passes import Prediction, Predictor, forward_grouped
from sentiment_ops.serving.holder import LoadedModel, ModelHolder
from sentiment_ops.serving.metrics import ServingMetrics
from sentiment_ops.serving.store_writer import StoreWriter
from sentiment_ops.serving.thread_chooser import ThreadChooser
from sentiment_ops.store import PredictionRecord, utcnow

log = logging.getLogger("sentiment_ops.serving")


# A lone batch of fewer tokens always runs on one thread: its operators are too small to
# share between threads.
SOLO_MIN_TOKENS = 64


def _estimated_tokens(text: str) -> int:
    """About how many tokens ``text`` is (4 characters a token), before it is tokenised."""
    return len(text) // 4 + 2


class _Text(Protocol):
    text: str


T = TypeVar("T", bound=_Text)


def fair_share(waiting: int, max_size: int, workers: int) -> int:
    """At most this many of ``waiting`` texts go to one of ``workers`` inference threads."""
    return min(max_size, max(1, -(-waiting // workers)))


def take_fitting(pending: deque[T], batch: list[T], limit: int, budget: int | None) -> bool:
    """Move texts from the front of ``pending`` to ``batch`` (not empty), in order, while the
    batch holds fewer than ``limit`` and its size x its widest text (estimated tokens) stays
    within ``budget``. True when the batch is closed: full, or the next text does not fit;
    False when ``pending`` ran out."""
    widest = max(_estimated_tokens(item.text) for item in batch)
    while len(batch) < limit:
        if not pending:
            return False
        tokens = max(widest, _estimated_tokens(pending[0].text))
        if budget is not None and (len(batch) + 1) * tokens > budget:
            return True
        batch.append(pending.popleft())
        widest = tokens
    return True


class ModelUnavailableError(SentopsError):
    """No model is loaded (yet): the request gets a 503."""


@dataclass(frozen=True)
class Result:
    id: str
    created_at: datetime
    text: str
    label: int
    probability: float | None  # P(positive) of a binary model
    confidence: float
    model: LoadedModel
    probabilities: tuple[float, ...] = ()  # every class's, in ``model.classes`` order

    @property
    def label_name(self) -> str:
        return self.model.classes.names[self.label]

    def class_probabilities(self) -> dict[str, float]:
        """``{class name: probability}`` for every class of the model."""
        return dict(zip(self.model.classes.names, self.probabilities, strict=True))


@dataclass
class _Item:
    text: str
    future: asyncio.Future[Result]
    t0: float
    request_id: str | None = None  # the HTTP request's, stored with its row


class MicroBatcher:
    def __init__(
        self,
        holder: ModelHolder,
        writer: StoreWriter,
        metrics: ServingMetrics,
        *,
        max_size: int = 32,
        max_wait_ms: float = 2.0,
        max_tokens: int | None = None,
        workers: int = 1,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.holder = holder
        self.writer = writer
        self.metrics = metrics
        self.max_size = max_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_tokens = max_tokens
        self._clock = clock
        self.workers = max(1, workers)
        self._pending: deque[_Item] = deque()  # taken by the inference threads themselves (``_cond``)
        self._cond = threading.Condition()
        self._busy = 0  # inference threads in a batch
        self._was_idle = True  # the last batch taken found no other batch running, nothing waiting
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.chooser = ThreadChooser()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"sentops-infer-{i}", daemon=True) for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    async def stop(self) -> None:
        """Finish what is queued, then stop (uvicorn has already drained connections)."""
        while True:
            with self._cond:
                if not self._pending and self._busy == 0:
                    self._closed = True
                    self._cond.notify_all()
                    break
            await asyncio.sleep(0.01)
        threads, self._threads = self._threads, []
        for thread in threads:
            await asyncio.to_thread(thread.join)
        await asyncio.sleep(0)  # the answers of the last batches (``_deliver``)

    async def predict(self, texts: list[str], request_id: str | None = None) -> list[Result]:
        """Predict ``texts``; their rows are stored with ``request_id`` (one per HTTP request)."""
        if self.holder.current is None:
            raise ModelUnavailableError()
        assert self._loop is not None, "batcher not started"
        now = self._clock()
        items = [_Item(t, self._loop.create_future(), now, request_id) for t in texts]
        with self._cond:
            self._pending.extend(items)
            self._cond.notify()
        return list(await asyncio.gather(*(i.future for i in items)))

    def _work(self) -> None:
        """An inference thread: take a batch, run it, hand the answers to the event loop."""
        loop = self._loop
        assert loop is not None
        last_size = 1
        while True:
            taken = self._take(last_size)
            if taken is None:
                return
            batch, alone = taken
            last_size = len(batch)
            batch = [i for i in batch if not i.future.done()]  # cancelled (client went away)
            results: list[Result] | None = None
            error: BaseException | None = None
            try:
                if batch:
                    results = self._infer([i.text for i in batch], batch, alone)
            except ModelUnavailableError as exc:
                error = exc
            except Exception as exc:
                log.exception("inference failed for a batch of %d", len(batch))
                error = exc
            finally:
                with self._cond:
                    self._busy -= 1
            if batch:
                try:
                    loop.call_soon_threadsafe(self._deliver, batch, results, error)
                except RuntimeError:  # the loop is closed: nobody waits for these answers
                    return

    def _take(self, last_size: int) -> tuple[list[_Item], bool] | None:
        """The next batch, first come first served, or None once stopped. Wait for company
        only under load (the last batch was shared): a lone client never pays the wait, a
        busy server fills its batches. With several inference threads a batch takes a fair
        share of what waits (one thread must not take the whole queue while the other soon
        idles) and about one pass of ``max_tokens`` (4 characters a token, estimated): the
        threads take the waiting texts pass by pass, in order; a text that does not fit opens
        the next batch. ``alone``: no other batch runs and nothing else waits."""
        with self._cond:
            while not self._pending:
                if self._closed:
                    return None
                self._cond.wait()
            pending = self._pending
            batch = [pending.popleft()]
            deadline = time.monotonic() + (self.max_wait_s if last_size > 1 else 0.0)
            limit, budget = self.max_size, None
            if self.workers > 1:
                limit, budget = fair_share(len(batch) + len(pending), self.max_size, self.workers), self.max_tokens
            while not take_fitting(pending, batch, limit, budget):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            # Alone: now and when the previous batch was taken (a lone client, not a gap in a
            # busy stream, where a many-thread pass would share the cores with the next ones).
            idle = self._busy == 0 and not pending
            alone, self._was_idle = idle and self._was_idle, idle
            self._busy += 1
            if pending:
                self._cond.notify()  # another idle thread takes the rest
            return batch, alone

    @staticmethod
    def _deliver(batch: list[_Item], results: list[Result] | None, error: BaseException | None) -> None:
        """On the event loop: the answers (or the error) of a batch to its requests."""
        if results is None:
            MicroBatcher._fail(batch, error or RuntimeError("no result"))
            return
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    @staticmethod
    def _fail(batch: list[_Item], exc: BaseException) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)

    def _infer(self, texts: list[str], items: list[_Item], alone: bool = False) -> list[Result]:
        """Runs in the inference thread; a batch that runs ``alone`` takes the predictor's
        many-thread session where it has one (``OnnxPredictor.solo``)."""
        model = self.holder.current  # one reference for the whole batch: reloads never split it
        if model is None:
            raise ModelUnavailableError()
        t0 = time.perf_counter()
        start = self._clock()
        for item in items:
            self.metrics.queue_wait.observe(max(0.0, start - item.t0))
        predictor = model.predictor
        ids = predictor.encode(texts)
        solo: Predictor = getattr(predictor, "solo", predictor)
        tokens = sum(len(x) for x in ids)
        choose = alone and solo is not predictor and tokens >= SOLO_MIN_TOKENS
        use_solo = choose and self.chooser.pick(tokens)
        t_pass = time.perf_counter()
        pred = forward_grouped(solo if use_solo else predictor, ids, max_tokens=self.max_tokens)
        if choose:
            self.chooser.record(tokens, use_solo, time.perf_counter() - t_pass)
        else:
            self.chooser.ran(use_solo)
        self.metrics.batch_threads.labels("many" if use_solo else "one").inc()
        self.metrics.inference.observe(time.perf_counter() - t0)
        self.metrics.batch_size.observe(len(texts))
        results, records = self._package(model, items, pred)
        self.writer.put(records)
        names = model.classes.names
        for label_id, count in enumerate(np.bincount(pred.labels, minlength=len(names))[: len(names)]):
            if count:
                self.metrics.predictions.labels(names[label_id]).inc(int(count))
        return results

    def _package(
        self, model: LoadedModel, items: list[_Item], pred: Prediction
    ) -> tuple[list[Result], list[PredictionRecord]]:
        """The answers of a batch and their rows for the store."""
        emb = pred.embeddings
        assert emb is not None
        done = self._clock()
        created = utcnow()
        results: list[Result] = []
        records: list[PredictionRecord] = []
        confidences, positive = pred.confidences, pred.positive
        probabilities = pred.probabilities.tolist()  # one conversion per batch, not per row
        for i, item in enumerate(items):
            label = int(pred.labels[i])
            rec = PredictionRecord(
                model_name=model.name,
                model_version=model.version,
                alias=model.alias,
                text=item.text,
                prediction=label,
                probability=None if positive is None else float(positive[i]),
                confidence=float(confidences[i]),
                embedding=emb[i],
                backend=model.backend,  # the embedding space, so drift compares like with like
                latency_ms=(done - item.t0) * 1000.0,
                created_at=created,
                request_id=item.request_id,
                probabilities=probabilities[i],
            )
            records.append(rec)
            confidence = float(confidences[i])
            results.append(
                Result(rec.id, created, item.text, label, rec.probability, confidence, model, tuple(probabilities[i]))
            )
        return results, records
