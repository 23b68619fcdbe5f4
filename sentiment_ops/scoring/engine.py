"""Where the forward passes of ``sentops score`` run: the engine seam.

An ``Engine`` turns batches of texts into ``Prediction``s, in the order it was given them,
reading ahead at most a bounded number of batches. ``score_file`` takes one as an argument
(as httpx takes ``transport=``), so a distributed engine (Spark, later) replaces this
module without touching reading, writing, resuming or logging.

- ``InProcessEngine``: one predictor in this process (the torch backend, a version logged
  without its graph, or ``--workers 1``).
- ``ProcessEngine``: ``workers`` processes, each with its own single-threaded ONNX session
  on the logged int8 graph (``OnnxFiles``). On 2 cores two 1-thread sessions beat one
  2-thread session (no cross-thread barrier per operator: ``serve.inference_workers``), and
  tokenising runs in the workers too, outside the GIL of the reading process."""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sentiment_ops.inference.passes import Prediction, Predictor, forward_grouped


class Engine(Protocol):
    backend: str
    workers: int

    def predict(self, batches: Iterable[list[str]]) -> Iterator[Prediction]:
        """One ``Prediction`` per batch, in order."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class OnnxFiles:
    """What a worker process needs to open the logged int8 graph (picklable)."""

    model_dir: Path
    graph: Path
    max_length: int | None = None
    threads: int = 1

    def build(self) -> Predictor:
        from sentiment_ops.inference.onnx import OnnxPredictor
        from sentiment_ops.inference.text import TextEncoder

        return OnnxPredictor(TextEncoder(self.model_dir, max_length=self.max_length), self.graph, self.threads)


def predict_texts(predictor: Predictor, texts: list[str], max_tokens: int | None) -> Prediction:
    """Encode and run one batch: passes grouped by length within the batch, each of at
    most ``max_tokens`` padded tokens (``serve.batch_max_tokens``, the server's rule)."""
    return forward_grouped(predictor, predictor.encode(texts), max_tokens=max_tokens)


class InProcessEngine:
    workers = 1

    def __init__(self, predictor: Predictor, max_tokens: int | None, backend: str = "onnx") -> None:
        self.predictor = predictor
        self.max_tokens = max_tokens
        self.backend = backend

    def predict(self, batches: Iterable[list[str]]) -> Iterator[Prediction]:
        for texts in batches:
            yield predict_texts(self.predictor, texts, self.max_tokens)

    def close(self) -> None:
        pass


_worker: Predictor | None = None  # the predictor of this worker process


def _init_worker(files: OnnxFiles) -> None:
    global _worker
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _worker = files.build()


def _predict_in_worker(texts: list[str], max_tokens: int | None) -> Prediction:
    assert _worker is not None, "worker not initialised"
    return predict_texts(_worker, texts, max_tokens)


class ProcessEngine:
    backend = "onnx"

    def __init__(self, files: OnnxFiles, workers: int, max_tokens: int | None, read_ahead: int = 3) -> None:
        self.workers = workers
        self.max_tokens = max_tokens
        self.in_flight = max(2, workers * read_ahead)  # enough queued that no worker waits
        # spawn: the workers start clean (no copied MLflow / SQLAlchemy threads or sessions)
        self.pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker, initargs=(files,)
        )

    def predict(self, batches: Iterable[list[str]]) -> Iterator[Prediction]:
        pending: deque[Future[Prediction]] = deque()
        for texts in batches:
            pending.append(self.pool.submit(_predict_in_worker, texts, self.max_tokens))
            if len(pending) >= self.in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
