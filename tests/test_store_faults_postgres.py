"""A bad row or a store outage never stops logging, on a real PostgreSQL (issue 10).

- a text the store cannot hold (U+0000) is refused at every way in, with its position;
- a row PostgreSQL refuses anyway goes to ``dead_letters`` and the rest of its batch is
  written (the writer no longer retries the whole batch forever);
- while PostgreSQL is down, /ready says why (503), /predict keeps answering while the
  bounded queue has room and answers 503 + Retry-After when it is full; after PostgreSQL is
  back every answered prediction is stored, and the engine has replaced its dead connections.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from serve_support import Server, promote, serve_settings, start_server, wait_for

from sentiment_ops.errors import DataError
from sentiment_ops.feedback import import_feedback
from sentiment_ops.serving.store_writer import QueueFullError, StoreWriter, WriterLimits
from sentiment_ops.store import InferenceStore, PredictionRecord

pytestmark = pytest.mark.integration


def _records(n: int, **kw: Any) -> list[PredictionRecord]:
    return [
        PredictionRecord(
            model_name="m",
            model_version=1,
            text=f"text {i}",
            prediction=i % 2,
            probability=0.7,
            confidence=0.7,
            embedding=np.full(8, i, np.float32),
            backend="onnx",
            **kw,
        )
        for i in range(n)
    ]


def test_a_refused_row_is_dead_lettered_and_the_batch_still_written(pg_url: str) -> None:
    store = InferenceStore(pg_url)
    records = _records(50)
    records[7].text = "nul \x00 inside"  # PostgreSQL: "text fields cannot contain NUL (0x00) bytes"
    records[31].model_name = "m" * 300  # PostgreSQL: value too long for character varying(200)
    dead: list[int] = []
    writer = StoreWriter(store, WriterLimits(max_batch=512), on_dead_letter=dead.append)
    writer.start()
    writer.put(records)
    assert writer.flush(timeout=30), "the writer is stuck on the refused rows"
    writer.put(_records(5))  # later predictions are still written
    assert writer.flush(timeout=30)
    assert writer.close() == 0
    assert store.count() == 48 + 5
    assert writer.written == 53 and writer.dead_lettered == 2 and sum(dead) == 2
    letters = {json.loads(d["payload"])["id"]: d for d in store.dead_letters()}
    assert set(letters) == {records[7].id, records[31].id}
    nul = letters[records[7].id]
    assert nul["kind"] == "prediction" and "NUL" in nul["error"]
    assert "\\u0000" in nul["payload"] and "\x00" not in nul["payload"]
    payload = json.loads(nul["payload"])
    assert payload["text"] == "nul \x00 inside" and payload["embedding"] == [7.0] * 8
    assert payload["backend"] == "onnx" and payload["model_version"] == 1
    assert "too long" in letters[records[31].id]["error"]
    store.close()


def test_feedback_import_refuses_control_characters_with_file_and_line(pg_url: str, tmp_path: Path) -> None:
    store = InferenceStore(pg_url)
    path = tmp_path / "labels.jsonl"
    path.write_text('{"text": "fine", "label": 1}\n{"text": "bell \\u0007 and nul \\u0000", "label": 0}\n')
    with pytest.raises(DataError) as err:
        import_feedback(store, path, "m")
    assert str(err.value) == (
        f"{path} line 2: text holds the control character U+0007 at position 5 "
        "(only tab, newline and carriage return are allowed)"
    )
    assert store.count() == 0  # nothing written from a refused file
    path.write_text('{"text": "tab\\there\\r\\nand newline", "label": 0}\n')
    assert import_feedback(store, path, "m").added == 1
    store.close()


# -- through the real server -----------------------------------------------------------------
def _count(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM predictions")).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture()
def pg_server(
    home_with_model: dict[str, Any], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Server, str]]:
    promote(1)
    monkeypatch.setenv("SENTOPS_STORE__URL", pg_url)
    server = start_server(serve_settings(store_queue_max=6))
    wait_for(lambda: server.state.holder.current is not None, 60)
    yield server, pg_url
    if server.thread.is_alive():
        server.stop()


def test_control_characters_are_refused_at_every_endpoint(pg_server: tuple[Server, str]) -> None:
    server, url = pg_server
    with server.client() as client:
        r = client.post("/predict", json={"text": "nul \u0000 inside"})
        assert r.status_code == 422 and "U+0000 at position 4" in r.json()["detail"], r.text
        r = client.post("/predict/batch", json={"texts": ["fine", "esc \u001b["]})
        assert r.status_code == 422 and "U+001B at position 4" in r.json()["detail"], r.text
        r = client.post("/invocations", json={"inputs": ["fine", "del \u007f"]})
        assert r.status_code == 422 and "text 1" in r.json()["detail"] and "U+007F" in r.json()["detail"]
        ok = client.post("/predict", json={"text": "tab\tnewline\nreturn\r fine"})
        assert ok.status_code == 200
        # C1 controls are mis-decoded Windows-1252 punctuation in real reviews: accepted, stored
        c1 = client.post("/predict", json={"text": "Well\u0085 it was fine \u0096 really"})
        assert c1.status_code == 200, c1.text
        assert server.state.writer.flush(10)
    assert _count(url) == 2


def test_store_outage_ready_503_queue_bounded_and_recovery(
    home_with_model: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from local_services import start_postgres

    cluster = start_postgres()  # our own: this test stops and restarts it
    try:
        url = cluster.create_database("outage")
        promote(1)
        monkeypatch.setenv("SENTOPS_STORE__URL", url)
        server = start_server(serve_settings(store_queue_max=6))
        try:
            _outage(server, cluster, url)
        finally:
            server.stop()
    finally:
        cluster.stop()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics")


def _outage(server: Server, cluster: Any, url: str) -> None:
    writer = server.state.writer
    with server.client() as client:
        wait_for(lambda: client.get("/ready").status_code == 200, 60)
        assert client.post("/predict", json={"text": "before the outage"}).status_code == 200
        assert writer.flush(10)

        cluster.pause()
        answered = 1
        r = client.post("/predict", json={"text": "during the outage"})
        assert r.status_code == 200  # queued: the store is down, the row is not lost
        answered += 1
        wait_for(lambda: not writer.store_up, 20)
        ready = client.get("/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["detail"].startswith("inference store unavailable")
        metrics = client.get("/metrics").text
        assert _metric(metrics, "sentops_store_up") == 0 and _metric(metrics, "sentops_store_pending_rows") == 1

        # the queue holds 6 rows: 5 more texts fit, the next are refused before any work
        assert client.post("/predict/batch", json={"texts": ["a", "b", "c", "d"]}).status_code == 200
        answered += 4
        assert client.post("/invocations", json={"inputs": ["e"]}).status_code == 200
        answered += 1
        full = client.post("/predict", json={"text": "no room"})
        assert full.status_code == 503 and full.headers["retry-after"] == "5", full.text
        assert "serve.store_queue_max 6" in full.json()["detail"]
        assert client.post("/invocations", json={"inputs": ["f", "g"]}).status_code == 503
        assert writer.pending == 6
        metrics = client.get("/metrics").text
        assert _metric(metrics, "sentops_store_rejected_rows_total") == 3

        cluster.resume()  # same port and data: pooled connections are dead, pre-ping replaces them
        wait_for(lambda: writer.pending == 0 and writer.store_up, 30)
        assert client.get("/ready").status_code == 200
        assert client.post("/predict", json={"text": "after the outage"}).status_code == 200
        answered += 1
        assert writer.flush(10)
        metrics = client.get("/metrics").text
        assert _metric(metrics, "sentops_store_up") == 1
        assert _metric(metrics, "sentops_store_rows_written_total") == answered
        assert _metric(metrics, "sentops_store_dead_letter_rows_total") == 0
    assert _count(url) == answered == 8
    store = InferenceStore(url)
    assert {r.backend for r in store.window("sentiment-classifier", 1, 100)} == {"torch"}
    store.close()


def test_writer_reserves_room_before_work(tmp_path: Path) -> None:
    writer = StoreWriter(InferenceStore(f"sqlite:///{tmp_path / 'x.db'}"), WriterLimits(max_queue=4))
    writer.reserve(3)
    with pytest.raises(QueueFullError, match=r"serve\.store_queue_max 4"):
        writer.reserve(2)
    writer.release(3)
    writer.reserve(4)
    assert writer.problem() is not None and "behind" in str(writer.problem())  # past the high-water mark


def test_sentops_serve_under_load_through_a_postgres_restart(
    home_with_model: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The fault benchmark in small: `sentops serve` on PostgreSQL, 8 clients, PostgreSQL
    stopped for a while and started again. Every 2xx is a stored row, no 5xx but 503, and
    503 only while PostgreSQL is down (the default queue holds the outage: none at all)."""
    import signal
    import threading
    import time

    import httpx
    from local_services import start_postgres, start_sentops_serve

    cluster = start_postgres()
    try:
        url = cluster.create_database("load")
        promote(1)
        env = {"SENTOPS_STORE__URL": url, "SENTOPS_SERVE__BACKEND": "torch", "SENTOPS_SERVE__POLL_INTERVAL_S": "1"}
        server = start_sentops_serve(env, tmp_path / "serve.log")
        answers: list[tuple[float, int]] = []
        ready: list[tuple[float, int]] = []
        stop = threading.Event()

        def client(k: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                i = 0
                while not stop.is_set():
                    r = c.post("/predict", json={"text": f"client {k} review {i}: a fine, moving film"})
                    answers.append((time.monotonic(), r.status_code))
                    i += 1

        def probe() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                while not stop.is_set():
                    ready.append((time.monotonic(), c.get("/ready").status_code))
                    time.sleep(0.2)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        threads.append(threading.Thread(target=probe))
        try:
            for t in threads:
                t.start()
            time.sleep(5)
            down = time.monotonic()
            cluster.pause()
            time.sleep(8)
            cluster.resume()
            up = time.monotonic()
            time.sleep(8)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
            code = server.stop()
        log = (tmp_path / "serve.log").read_text()
        assert code in (0, -signal.SIGTERM), log[-2000:]  # uvicorn re-raises SIGTERM after its shutdown
        ok = sum(s == 200 for _, s in answers)
        assert {s for _, s in answers} <= {200, 503}, {s for _, s in answers}
        assert all(down <= t <= up + 3 for t, s in answers if s == 503), "503 only during the outage"
        assert any(s == 503 for t, s in ready if down <= t <= up + 1), "/ready said the store was down"
        assert ready[-1][1] == 200, "ready again after the outage"
        assert _count(url) == ok > 100, (ok, len(answers))
        assert "could not be written" not in log
    finally:
        cluster.stop()


def test_a_store_too_slow_is_reported_before_the_queue_fills(pg_url: str) -> None:
    """A write that hangs (here: a table lock another session holds) turns /ready's reason
    on after ``slow_write_s``, and the rows are written once the lock goes."""
    import time

    store = InferenceStore(pg_url)
    writer = StoreWriter(store, WriterLimits(slow_write_s=0.5))
    writer.start()
    blocker = sa.create_engine(pg_url)
    with blocker.connect() as conn:
        tx = conn.begin()
        conn.execute(sa.text("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE"))
        writer.put(_records(3))
        wait_for(lambda: writer.problem() is not None, 10)
        assert str(writer.problem()).startswith("inference store write in flight for")
        time.sleep(0.1)
        tx.rollback()
    assert writer.flush(10) and writer.problem() is None
    assert writer.close() == 0 and store.count() == 3
    blocker.dispose()
    store.close()
