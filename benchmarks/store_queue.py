"""What a queued prediction costs, and how fast the store writer drains a full queue.

    python benchmarks/store_queue.py --url postgresql+psycopg://user:pass@127.0.0.1/db [--rows 20000]

Builds ``--rows`` records as the server does (a ~90-character text, a 384-float embedding
that is a view on its micro-batch's array), measures their memory with tracemalloc, then
queues them all in a ``StoreWriter`` and times the drain into ``--url`` (default: a
throwaway SQLite file). These figures size ``serve.store_queue_max``
(docs/serving.md, "When the store fails"). Writes the section ``queue`` of benchmarks/results/store.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc

import numpy as np
from harness import RESULTS, load_average, write_result

from sentiment_ops.serving.store_writer import StoreWriter, WriterLimits
from sentiment_ops.store import InferenceStore, PredictionRecord

OUT = RESULTS / "store.json"  # its section "queue"
DIM = 384  # MiniLM's hidden size


def records(n: int) -> list[PredictionRecord]:
    emb = np.random.default_rng(0).random((n, DIM), dtype=np.float32)
    return [
        PredictionRecord(
            model_name="sentiment-classifier",
            model_version=1,
            text=f"Short review {i}: a moving, beautifully acted film that overstays its welcome a bit.",
            prediction=1,
            probability=0.9,
            confidence=0.9,
            embedding=emb[i],
            latency_ms=3.0,
            alias="production",
            backend="onnx",
        )
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="inference store URL (default: a throwaway SQLite file)")
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    load_before = load_average()

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    recs = records(args.rows)
    per_row = (tracemalloc.get_traced_memory()[0] - before) / args.rows
    tracemalloc.stop()

    with tempfile.TemporaryDirectory() as tmp:
        store = InferenceStore(args.url or f"sqlite:///{tmp}/inference.db")
        writer = StoreWriter(store, WriterLimits(max_queue=args.rows))
        writer.put(recs)
        t0 = time.perf_counter()
        writer.start()
        assert writer.flush(timeout=600), "the writer did not drain"
        seconds = time.perf_counter() - t0
        writer.close()
        dialect = store.engine.dialect.name
        store.close()
    result = {
        "rows": args.rows,
        "bytes_per_queued_row": round(per_row),
        "queue_mb": round(per_row * args.rows / 1e6, 1),
        "store": dialect,
        "drain_seconds": round(seconds, 2),
        "drain_rows_per_s": round(args.rows / seconds),
    }
    result = write_result(OUT, result, load_before, section="queue")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
