"""The micro-batcher's batch formation, with a recording predictor in place of the model
(what batches it is handed is the behaviour under test) and a real store writer."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from sentiment_ops.serving.batcher import MicroBatcher
from sentiment_ops.serving.holder import LoadedModel
from sentiment_ops.serving.metrics import ServingMetrics
from sentiment_ops.serving.store_writer import StoreWriter
from sentiment_ops.store import InferenceStore, utcnow


class Recording:
    """Encodes 4 characters a token; every text is positive; remembers each batch."""

    pad_id = 0

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> list[list[int]]:
        with self._lock:
            self.batches.append(list(texts))
        time.sleep(0.02)  # a batch takes a while: the queue fills meanwhile
        return [[1] * (len(t) // 4 + 2) for t in texts]

    def forward_ids(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        n = len(batch)
        return np.tile(np.array([0.0, 2.0], np.float32), (n, 1)), np.ones((n, 4), np.float32)


class Holder:
    def __init__(self, predictor: Any) -> None:
        self.current = LoadedModel("m", 1, "production", None, "test", "onnx", utcnow(), predictor)


def serve_all(tmp_path: Path, texts: list[str], workers: int) -> tuple[list[Any], Recording, InferenceStore]:
    predictor = Recording()
    store = InferenceStore(f"sqlite:///{tmp_path / 'inference.db'}")
    writer = StoreWriter(store)
    writer.start()
    batcher = MicroBatcher(
        Holder(predictor),  # type: ignore[arg-type]
        writer,
        ServingMetrics(),
        max_size=32,
        max_wait_ms=2.0,
        max_tokens=384,
        workers=workers,
    )

    async def run() -> list[Any]:
        await batcher.start()
        try:  # all requests arrive at once, in this order
            return list(await asyncio.gather(*(batcher.predict([t], request_id=str(i)) for i, t in enumerate(texts))))
        finally:
            await batcher.stop()

    results = asyncio.run(run())
    writer.close()
    return results, predictor, store


def test_batches_keep_arrival_order_share_the_queue_and_run_long_texts_alone(tmp_path: Path) -> None:
    texts = [f"short review {i}" for i in range(20)] + [f"long review {i} " + "word " * 400 for i in range(3)]
    texts += [f"another short one {i}" for i in range(20)] + [f"late long one {i} " + "word " * 400 for i in range(3)]
    results, predictor, store = serve_all(tmp_path, texts, workers=2)

    assert [r[0].text for r in results] == texts and all(r[0].label == 1 for r in results)
    position = {t: i for i, t in enumerate(texts)}
    seen = sorted(position[t] for b in predictor.batches for t in b)
    assert seen == list(range(len(texts)))  # every text once
    for batch in predictor.batches:
        where = [position[t] for t in batch]
        # first come, first served: a batch is a run of consecutive arrivals, in order
        assert where == list(range(where[0], where[0] + len(where)))
        if any(len(t) > 1000 for t in batch):
            assert len(batch) == 1  # a text of more than one pass's tokens goes alone
        # a fair share: never more than half of what waited when the first batch formed
        assert len(batch) <= (len(texts) + 1) // 2
    assert store.count() == len(texts)


def test_one_worker_takes_as_much_as_fits(tmp_path: Path) -> None:
    """With one inference worker there is nobody to share with: batches fill up to
    ``batch_max_size`` whatever their length (the passes are split in the thread)."""
    texts = [f"short review {i}" for i in range(10)] + [f"long review {i} " + "word " * 400 for i in range(5)]
    results, predictor, store = serve_all(tmp_path, texts, workers=1)
    assert [r[0].text for r in results] == texts
    assert predictor.batches[0] == texts
    assert store.count() == len(texts)


def test_inference_threads_go_on_while_the_event_loop_is_busy(tmp_path: Path) -> None:
    """Under load the event loop is busy with HTTP; a thread that finishes a batch must take
    the next one itself, not wait for the loop to hand it over (the cores idled meanwhile)."""
    predictor = Recording()
    store = InferenceStore(f"sqlite:///{tmp_path / 'inference.db'}")
    writer = StoreWriter(store)
    writer.start()
    batcher = MicroBatcher(Holder(predictor), writer, ServingMetrics(), max_size=4, max_wait_ms=0.0, workers=1)  # type: ignore[arg-type]
    texts = [f"review {i}" for i in range(12)]  # 3 batches of 4, 20 ms each

    async def run() -> tuple[int, list[Any]]:
        await batcher.start()
        try:
            tasks = [asyncio.ensure_future(batcher.predict([t])) for t in texts]
            await asyncio.sleep(0)  # every request queued
            time.sleep(0.5)  # the loop is busy (HTTP, other requests): it runs nothing else
            during = len(predictor.batches)
            return during, list(await asyncio.gather(*tasks))
        finally:
            await batcher.stop()

    during, results = asyncio.run(run())
    writer.close()
    assert during == 3  # every batch ran while the loop was blocked
    assert [r[0].text for r in results] == texts
    assert [len(b) for b in predictor.batches] == [4, 4, 4]
    assert store.count() == len(texts)


class WithSolo(Recording):
    """A recording predictor with a many-thread view (``solo``), like ``OnnxPredictor``:
    ``layouts`` says which of the two ran each pass."""

    def __init__(self) -> None:
        super().__init__()
        self.layouts: list[str] = []  # a batch takes 50 ms (``encode`` 20 + 30 here)
        self.solo = _SoloRecording(self)

    def forward_ids(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        return self.run_pass("one", batch)

    def run_pass(self, layout: str, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        self.layouts.append(layout)
        time.sleep(0.03)
        return super().forward_ids(batch)


class _SoloRecording:
    def __init__(self, base: WithSolo) -> None:
        self.base = base

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.base.encode(texts)

    def forward_ids(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        return self.base.run_pass("solo", batch)


def test_a_pass_takes_every_core_only_for_a_lone_client_not_in_a_gap_of_a_burst(tmp_path: Path) -> None:
    """A batch runs alone (the many-thread session) when nothing else runs or waits, and
    nothing did when the batch before it was taken: the first lone batch after a burst runs
    on one thread, as the burst's did (its clients' next requests would share the cores)."""
    predictor = WithSolo()
    store = InferenceStore(f"sqlite:///{tmp_path / 'inference.db'}")
    writer = StoreWriter(store)
    writer.start()
    batcher = MicroBatcher(Holder(predictor), writer, ServingMetrics(), max_tokens=384, workers=2)  # type: ignore[arg-type]
    lone = "word " * 60  # 77 tokens: enough for the many-thread session

    async def run() -> None:
        await batcher.start()
        try:
            await batcher.predict([lone])  # a lone client
            await batcher.predict([f"burst {i:02d} " + "word " * 10 for i in range(10)])  # all at once
            await batcher.predict([lone])  # the first lone request after the burst
            await batcher.predict([lone])
        finally:
            await batcher.stop()

    asyncio.run(run())
    writer.close()
    # one pass a batch (the burst's texts are of one length): the layouts line up with the batches
    assert len(predictor.layouts) == len(predictor.batches)
    lone_layouts = [layout for layout, b in zip(predictor.layouts, predictor.batches, strict=True) if b == [lone]]
    burst_layouts = {layout for layout, b in zip(predictor.layouts, predictor.batches, strict=True) if b != [lone]}
    assert burst_layouts == {"one"}  # the burst's batches run side by side
    assert lone_layouts == ["solo", "one", "solo"]
    assert store.count() == 13
