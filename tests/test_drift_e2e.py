"""End to end: predictions sent through the real API (uvicorn on 127.0.0.1) fill the
inference store, and ``sentops drift`` reads them (no second forward pass)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from sentiment_ops.config import load_settings
from sentiment_ops.data import load_corpus
from sentiment_ops.demo.server import free_port


def test_api_traffic_then_drift(cli: Callable[..., Any], trained: dict[str, Any]) -> None:
    import httpx
    import uvicorn

    from sentiment_ops.serving import create_app

    assert cli("promote", "--version", "1").exit_code == 0
    settings = load_settings(overrides={"serve.poll_interval_s": 0.5})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    tweets = load_corpus("tweets").test.texts[:60]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("the server never became ready")
        with httpx.Client(base_url=base, timeout=30) as client:
            for text in tweets:
                assert client.post("/predict", json={"text": text}).status_code == 200
    finally:
        server.should_exit = True  # graceful shutdown flushes queued rows to the store
        thread.join(timeout=30)
    assert not thread.is_alive()

    result = cli("drift", "--window", "60", "--json", "--show-texts")
    assert result.exit_code == 3, result.output  # tweets against an IMDB reference
    report = json.loads(result.stdout)
    assert report["n_rows"] == 60 and report["model_version"] == 1
    assert {f["text"] for f in report["farthest"]} <= set(tweets)
