"""The write-behind store writer: batched inserts, retries while the store fails, and a
close that writes everything still queued."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from sentiment_ops.config import ServeSettings
from sentiment_ops.serving.store_writer import StoreWriter, WriterLimits
from sentiment_ops.store import InferenceStore, PredictionRecord, text_hash


def _records(n: int, start: int = 0) -> list[PredictionRecord]:
    return [
        PredictionRecord(
            model_name="m",
            model_version=1,
            text=f"text {start + i}",
            prediction=i % 2,
            probability=0.7,
            confidence=0.7,
            embedding=np.full(8, i, np.float32),
        )
        for i in range(n)
    ]


def test_writes_in_batches_and_close_drains(tmp_path: Path) -> None:
    store = InferenceStore(f"sqlite:///{tmp_path / 'inf.db'}")
    batches: list[int] = []
    writer = StoreWriter(store, WriterLimits(max_batch=100), on_write=lambda n, _s: batches.append(n))
    writer.start()
    for k in range(10):
        writer.put(_records(50, k * 50))
    writer.close()
    assert store.count() == 500
    assert sum(batches) == 500 and max(batches) <= 100 and len(batches) < 500
    assert writer.pending == 0
    row = store.window("m", 1, 1)[0]
    assert row.embedding is not None and row.embedding.shape == (8,)


def test_failed_writes_are_retried_not_lost(tmp_path: Path) -> None:
    store = InferenceStore(f"sqlite:///{tmp_path / 'inf.db'}")
    with store.engine.begin() as conn:  # make the store fail for real: hide its table
        conn.execute(sa.text("ALTER TABLE predictions RENAME TO predictions_hidden"))
    failed = threading.Event()
    errors: list[str] = []

    def on_error(message: str) -> None:
        errors.append(message)
        failed.set()

    writer = StoreWriter(store, on_error=on_error)
    writer.start()
    writer.put(_records(30))
    assert failed.wait(10)
    assert writer.pending == 30 and writer.written == 0
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE predictions_hidden RENAME TO predictions"))
    assert writer.flush(timeout=30)
    writer.close()
    assert store.count() == 30 and errors
    assert sorted(r.text for r in store.window("m", 1, 100)) == sorted(f"text {i}" for i in range(30))


def test_close_without_start_writes_synchronously(tmp_path: Path) -> None:
    store = InferenceStore(f"sqlite:///{tmp_path / 'inf.db'}")
    writer = StoreWriter(store)
    writer.put(_records(5))
    writer.close()
    assert store.count() == 5


def test_rows_the_store_cannot_take_at_shutdown_are_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = InferenceStore(f"sqlite:///{tmp_path / 'inf.db'}")
    with store.engine.begin() as conn:  # the store is broken for good
        conn.execute(sa.text("ALTER TABLE predictions RENAME TO predictions_hidden"))
    writer = StoreWriter(store)
    writer.start()
    writer.put(_records(7))
    assert not writer.flush(timeout=1)
    assert writer.problem() is not None and "unavailable" in str(writer.problem())
    with caplog.at_level(logging.ERROR, "sentiment_ops.serving"):
        assert writer.close(timeout=10) == 7
    assert "7 predictions could not be written at shutdown" in caplog.text


@pytest.mark.parametrize("store_text", [True, False])
def test_a_refused_row_is_dead_lettered_without_its_text_when_texts_are_not_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, store_text: bool
) -> None:
    """SQLite refuses a row without a model name (NOT NULL): it goes to dead_letters, with
    its text only when store.store_text is on (else its hash, as the row would have), and
    the log line names the row, never its text."""
    store = InferenceStore(f"sqlite:///{tmp_path / 'inf.db'}", store_text=store_text)
    records = _records(6)
    secret = "my card number is 4111 and I hate this airline"
    records[3].text = secret
    records[3].model_name = None  # type: ignore[assignment]
    writer = StoreWriter(store)
    writer.start()
    with caplog.at_level(logging.DEBUG):
        writer.put(records)
        assert writer.flush(timeout=30)
        writer.close()
    assert store.count() == 5 and writer.dead_lettered == 1
    (letter,) = store.dead_letters()
    payload = json.loads(letter["payload"])
    assert payload["id"] == records[3].id and "NOT NULL" in letter["error"]
    assert payload["text_hash"] == text_hash(secret)
    assert payload["text"] == (secret if store_text else None)
    assert (secret in letter["payload"]) is store_text and secret not in letter["error"]
    assert records[3].id in caplog.text and secret not in caplog.text


def test_the_server_limits_come_from_the_serve_settings() -> None:
    """``serve.store_queue_max`` bounds the rows, ``serve.store_queue_max_mb`` the characters
    of their texts (4 bytes a character at most); the rest keep the writer's defaults."""
    limits = WriterLimits.from_settings(ServeSettings(store_queue_max=7, store_queue_max_mb=2))
    assert (limits.max_queue, limits.max_text_chars) == (7, 2 * 1024 * 1024 // 4)
    writer = StoreWriter(None, limits)
    assert (writer.max_queue, writer.max_batch, writer.high_water) == (7, WriterLimits().max_batch, 5)
