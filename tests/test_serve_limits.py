"""What bounds the server's memory and what it shows of itself: text requests past
``serve.max_concurrent_requests`` or ``serve.max_inflight_mb`` get a 503 before their body
is read, the store's write-behind queue is bounded by the characters of its texts, every
answer carries ``nosniff``, and ``serve.docs: false`` hides the API description. Real
uvicorn, tiny model."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_support import Server, promote, serve_settings, start_server, wait_for

from sentiment_ops.serving.store_writer import QueueFullError, StoreWriter, WriterLimits
from sentiment_ops.store import InferenceStore, PredictionRecord


class SlowRequest:
    """A POST whose head is sent and whose body is held back: in progress on the server
    until ``finish`` sends the body (valid JSON padded with spaces to ``length`` bytes)."""

    def __init__(self, port: int, path: str, length: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        assert len(raw) <= length
        self.body = raw + b" " * (length - len(raw))
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        self.sock.sendall(f"{head}Content-Length: {length}\r\n\r\n".encode())

    def finish(self) -> int:
        self.sock.sendall(self.body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = self.sock.recv(65536)
            assert chunk, answer
            answer += chunk
        self.sock.close()
        return int(answer.split(b" ", 2)[1])


def test_text_requests_past_the_bounds_get_503_before_their_body_is_read(
    home_with_model: dict[str, Any], running: list[Server]
) -> None:
    promote(1)
    srv = start_server(serve_settings(max_concurrent_requests=2, max_inflight_mb=1))
    running.append(srv)
    admission = srv.app.state.admission
    port = int(srv.url.rsplit(":", 1)[1])
    with srv.client() as c:
        big = SlowRequest(port, "/predict/batch", 900_000, {"texts": ["a fine film"]})
        wait_for(lambda: admission.requests == 1 and admission.bytes == 900_000)
        # 900,000 + this body's bytes pass 1 MiB: refused unread, the connection closed
        over = c.post("/predict/batch", json={"texts": ["good " * 4000] * 10})
        assert over.status_code == 503, over.text
        assert over.headers["Retry-After"] == "2" and over.headers["Connection"] == "close"
        assert "serve.max_inflight_mb" in over.json()["detail"]
        assert c.post("/predict", json={"text": "a small one fits"}).status_code == 200

        small = SlowRequest(port, "/predict", 100, {"text": "held"})
        wait_for(lambda: admission.requests == 2)
        busy = c.post("/invocations", json={"inputs": ["one too many"]})
        assert busy.status_code == 503 and "serve.max_concurrent_requests" in busy.json()["detail"]
        assert c.get("/health").status_code == 200  # only the text routes are admitted

        assert big.finish() == 200 and small.finish() == 200
        wait_for(lambda: admission.requests == 0 and admission.bytes == 0)
        assert c.post("/predict/batch", json={"texts": ["good " * 4000] * 10}).status_code == 200
    metric = srv.state.metrics.registry.get_sample_value
    for endpoint in ("/predict/batch", "/invocations"):  # each refusal counted under its route
        assert metric("sentops_requests_total", {"endpoint": endpoint, "outcome": "5xx"}) == 1


def _records(texts: list[str]) -> list[PredictionRecord]:
    return [
        PredictionRecord(
            model_name="m",
            model_version=1,
            text=t,
            prediction=1,
            probability=0.9,
            confidence=0.9,
            embedding=np.zeros(4, np.float32),
            backend="onnx",
        )
        for t in texts
    ]


def test_the_store_queue_is_bounded_by_the_characters_of_its_texts(tmp_path: Path) -> None:
    writer = StoreWriter(
        InferenceStore(f"sqlite:///{tmp_path / 'x.db'}"), WriterLimits(max_queue=100, max_text_chars=1000)
    )
    writer.reserve(1, 5000)  # nothing waits: a long text within the text limits still passes
    writer.put(_records(["x" * 5000]))
    writer.release(1, 5000)
    with pytest.raises(QueueFullError, match=r"serve\.store_queue_max_mb"):
        writer.reserve(1, 10)  # rows to spare, but not characters
    writer.start()
    assert writer.flush(10)  # written: the characters are free again
    writer.reserve(2, 900)
    with pytest.raises(QueueFullError):
        writer.reserve(1, 200)
    writer.release(2, 900)
    writer.reserve(1, 999)
    writer.release(1, 999)
    assert writer.close() == 0


def test_every_answer_says_nosniff(home_with_model: dict[str, Any], running: list[Server]) -> None:
    promote(1)
    srv = start_server(serve_settings())
    running.append(srv)
    with srv.client() as c:
        answers = [
            c.get("/health"),
            c.get("/ready"),
            c.post("/predict", json={"text": "fine"}),
            c.post("/predict", json={"text": ""}),  # 422
            c.get("/nowhere"),  # 404
            c.get("/metrics"),
        ]
    for r in answers:
        assert r.headers["X-Content-Type-Options"] == "nosniff", (r.request.url, r.headers)
        assert r.headers.get_list("X-Content-Type-Options") == ["nosniff"]


def test_docs_false_hides_the_api_description(home_with_model: dict[str, Any], running: list[Server]) -> None:
    promote(1)
    srv = start_server(serve_settings(docs=False))
    running.append(srv)
    with srv.client() as c:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            assert c.get(path).status_code == 404, path
        assert c.post("/predict", json={"text": "still serving"}).status_code == 200
