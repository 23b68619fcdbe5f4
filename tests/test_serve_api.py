"""`sentops serve` endpoints against a real uvicorn on a loopback port, with the tiny
model trained by `sentops train` and promoted with `sentops promote`."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from local_services import sql_rows
from serve_support import Server, free_port, promote, serve_settings, start_server, wait_for

from sentiment_ops.config import load_settings
from sentiment_ops.store import InferenceStore


def test_predict_logs_the_prediction_with_its_embedding(home_with_model: dict[str, Any], running: list[Server]) -> None:
    promote(1)
    srv = start_server(serve_settings())
    running.append(srv)
    with srv.client() as c:
        r = c.post("/predict", json={"text": "A moving, beautifully acted film."})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) >= {"id", "timestamp", "text", "prediction", "label", "confidence", "model", "model_stage"}
        assert body["text"] == "A moving, beautifully acted film."
        assert body["prediction"] in (0, 1)
        assert body["label"] == ["negative", "positive"][body["prediction"]]
        assert 0.5 <= body["confidence"] <= 1.0
        # a binary model: both classes by name, and P(positive) as always
        assert set(body["probabilities"]) == {"negative", "positive"}
        assert body["probability"] == body["probabilities"]["positive"]
        assert body["probabilities"]["negative"] + body["probability"] == pytest.approx(1.0)
        assert body["model"] == {"name": "sentiment-classifier", "version": 1, "alias": "production"}
        assert body["model_stage"] == "production"
        ts = datetime.fromisoformat(body["timestamp"])
        assert ts.utcoffset() is not None and ts.utcoffset().total_seconds() == 0

        rb = c.post("/predict/batch", json={"texts": ["Loved it.", "Dull, far too long and badly acted." * 20]})
        assert rb.status_code == 200, rb.text
        preds = rb.json()["predictions"]
        assert [p["text"][:9] for p in preds] == ["Loved it.", "Dull, far"]
        assert len({p["id"] for p in preds}) == 2

    srv.state.writer.flush()
    store = srv.state.store
    row = store.get(body["id"])
    assert row.model_version == 1 and row.alias == "production"
    assert row.prediction == body["prediction"]
    assert abs(row.confidence - body["confidence"]) < 1e-9
    assert row.text == body["text"]
    assert row.probability == pytest.approx(body["probability"])
    assert row.probabilities == pytest.approx([body["probabilities"]["negative"], body["probabilities"]["positive"]])
    assert row.embedding is not None and row.embedding.shape == (32,)
    assert row.latency_ms is not None and row.latency_ms >= 0
    assert store.count() == 3


def test_health_ready_model_and_metrics(home_with_model: dict[str, Any], running: list[Server]) -> None:
    promote(1)
    srv = start_server(serve_settings())
    running.append(srv)
    with srv.client() as c:
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/ready").json()["ready"] is True
        info = c.get("/model").json()
        assert info["ready"] is True and info["version"] == 1 and info["alias"] == "production"
        assert info["run_id"] == home_with_model["run_id"]
        assert info["backend"] == "torch" and info["loaded_at"] and info["last_reload_error"] is None
        assert info["labels"] == ["negative", "positive"]  # a model logged without classes: binary
        for _ in range(3):
            assert c.post("/predict", json={"text": "fine"}).status_code == 200
        assert c.post("/predict", json={"text": ""}).status_code == 422
        m = c.get("/metrics")
        assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
        text = m.text
        assert 'sentops_requests_total{endpoint="/predict",outcome="2xx"} 3.0' in text
        assert 'sentops_requests_total{endpoint="/predict",outcome="4xx"} 1.0' in text
        assert 'sentops_model_version{alias="production",backend="torch",name="sentiment-classifier"} 1.0' in text
        assert "sentops_batch_size_count" in text and "sentops_request_latency_seconds_bucket" in text
        neg = _metric(text, 'sentops_predictions_total{label="negative"}')
        pos = _metric(text, 'sentops_predictions_total{label="positive"}')
        assert neg + pos == 3
        assert 'sentops_reloads_total{outcome="success"} 1.0' in text
        assert c.get("/docs").status_code == 200
        schema = c.get("/openapi.json").json()
        assert {"/predict", "/predict/batch", "/feedback", "/health", "/ready", "/model", "/metrics"} <= set(
            schema["paths"]
        )
        assert "/admin/reload" not in schema["paths"]
        tags = {path: tag for path, ops in schema["paths"].items() for op in ops.values() for tag in op["tags"]}
        assert tags == {  # one router per resource
            "/predict": "predict",
            "/predict/batch": "predict",
            "/invocations": "predict",
            "/feedback": "feedback",
            "/health": "ops",
            "/ready": "ops",
            "/model": "ops",
            "/metrics": "ops",
            "/label": "label",
            "/label/queue": "label",
            "/label/undo": "label",
        }
        assert set(schema["paths"]["/feedback"]["post"]["responses"]) >= {"401", "403", "404", "422"}


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")


def test_feedback_round_trip(
    home_with_model: dict[str, Any], running: list[Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTOPS_FEEDBACK_TOKEN", "labeller-token")
    promote(1)
    srv = start_server(serve_settings())
    running.append(srv)
    with srv.client(headers={"Authorization": "Bearer labeller-token"}) as c:
        pid = c.post("/predict", json={"text": "Great fun."}).json()["id"]
        # immediately after: the row may still be in the write-behind queue
        r = c.post("/feedback", json={"id": pid, "label": "positive"})
        assert r.status_code == 200, r.text
        assert r.json() == {"id": pid, "label": 1, "updated": True}
        assert c.post("/feedback", json={"id": pid, "label": 1}).json()["updated"] is False
        assert c.post("/feedback", json={"id": pid, "label": 0}).json() == {"id": pid, "label": 0, "updated": True}
        assert srv.state.store.get(pid).feedback_label == 0
        # a class name in any case: the label it already holds
        same = c.post("/feedback", json={"id": pid, "label": "NEGATIVE"})
        assert same.json() == {"id": pid, "label": 0, "updated": False}

        missing = c.post("/feedback", json={"id": "0" * 32, "label": 1})
        assert missing.status_code == 404 and "no logged prediction" in missing.json()["detail"]
        for bad in (2, -1, "neutral", "pos", "1", None, True, 1.0, [1]):
            r = c.post("/feedback", json={"id": pid, "label": bad})
            assert r.status_code == 422, (bad, r.text)
            assert "label" in r.json()["detail"]
        assert c.post("/feedback", json={"label": 1}).status_code == 422


def test_invocations_speaks_the_mlflow_protocol(home_with_model: dict[str, Any], running: list[Server]) -> None:
    promote(1)
    srv = start_server(serve_settings())
    running.append(srv)
    bodies = [
        {"dataframe_split": {"columns": ["text"], "data": [["good"], ["bad"]]}},
        {"dataframe_records": [{"text": "good"}, {"text": "bad"}]},
        {"inputs": ["good", "bad"]},
        {"inputs": {"text": ["good", "bad"]}},
        {"instances": [{"text": "good"}, {"text": "bad"}]},
    ]
    with srv.client() as c:
        for body in bodies:
            r = c.post("/invocations", json=body)
            assert r.status_code == 200, (body, r.text)
            preds = r.json()["predictions"]
            want = ["label", "label_name", "probability", "confidence", "p_negative", "p_positive"]
            assert len(preds) == 2 and list(preds[0]) == want  # the logged pyfunc's columns
            assert preds[0]["p_positive"] == pytest.approx(preds[0]["probability"])
        for bad in (
            {},
            {"inputs": 3},
            {"inputs": [""]},
            {"inputs": [1]},
            {"dataframe_split": {"data": [[1]]}},
            {"dataframe_records": [{"txt": "a"}]},
            {"inputs": []},
        ):
            r = c.post("/invocations", json=bad)
            assert r.status_code == 422, (bad, r.text)
    srv.state.writer.flush()
    assert srv.state.store.count() == 10


def test_starts_without_a_model_and_picks_one_up(
    home_with_model: dict[str, Any], running: list[Server], caplog: Any
) -> None:
    srv = start_server(serve_settings())  # no alias yet
    running.append(srv)
    with srv.client() as c:
        assert c.get("/health").status_code == 200
        r = c.get("/ready")
        assert r.status_code == 503 and r.json()["ready"] is False
        p = c.post("/predict", json={"text": "hello"})
        assert p.status_code == 503 and "no model is loaded" in p.json()["detail"]
        assert c.get("/model").json()["version"] is None and c.get("/model").json()["labels"] is None
        time.sleep(0.6)  # a few polls: the "no model" line is logged once, not per poll
        said = [r for r in caplog.records if "no model behind alias" in r.getMessage()]
        assert len(said) == 1
        promote(1)
        wait_for(lambda: c.get("/ready").status_code == 200)
        assert c.post("/predict", json={"text": "hello"}).json()["model"]["version"] == 1


@pytest.mark.parametrize("backend", ["torch", "onnx"])  # onnx: two inference workers
def test_burst_of_concurrent_requests_stores_every_row(
    home_with_model: dict[str, Any], running: list[Server], backend: str
) -> None:
    promote(1)
    srv = start_server(serve_settings(batch_max_size=8, batch_max_wait_ms=5, backend=backend))
    running.append(srv)
    texts = [f"review number {i}: " + "good " * (i % 17) for i in range(120)]

    def one(text: str) -> tuple[int, str]:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            r = c.post("/predict", json={"text": text})
            return r.status_code, r.json().get("id", "")

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, texts))
    ok = [pid for status, pid in results if status == 200]
    assert len(ok) == len(texts)
    srv.stop()  # graceful shutdown flushes the write-behind queue
    store = InferenceStore(load_settings().store_url)
    assert store.count() == len(ok)
    assert {store.get(pid).text for pid in ok} == set(texts)
    metrics = srv.state.metrics.registry
    assert metrics.get_sample_value("sentops_batch_size_count") < len(texts)  # requests were batched


def test_store_text_false_keeps_only_the_hash(
    home_with_model: dict[str, Any], running: list[Server], monkeypatch: Any
) -> None:
    promote(1)
    monkeypatch.setenv("SENTOPS_STORE__STORE_TEXT", "false")
    srv = start_server(serve_settings())
    running.append(srv)
    text = "secret review"
    with srv.client() as c:
        r = c.post("/predict", json={"text": text})
        assert r.status_code == 200, r.text
        pid = r.json()["id"]
    srv.stop()  # drains the store writer
    url = load_settings().store_url
    # read the columns themselves: PredictionRecord turns a NULL text into ""
    assert sql_rows(url, f"SELECT text, text_hash FROM predictions WHERE id = '{pid}'") == [
        (None, hashlib.sha256(text.encode("utf-8")).hexdigest())
    ]
    row = InferenceStore(url).get(pid)
    assert row.text == "" and row.prediction in (0, 1)


def test_cli_serve_runs_uvicorn(home_with_model: dict[str, Any], tmp_path: Path) -> None:
    promote(1)
    port = free_port()
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("serve:\n  poll_interval_s: 1\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentiment_ops.cli.main", "serve", "--port", str(port), "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(url + "/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                return False

        wait_for(ready, timeout=120, interval=0.3)
        r = httpx.post(url + "/predict", json={"text": "good"}, timeout=10)
        assert r.status_code == 200 and r.json()["model"]["version"] == 1
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: -15 is expected
    assert proc.returncode in (0, -15), out
    assert "Application shutdown complete" in out and "Traceback" not in out
    assert "serving alias production" in out
    assert InferenceStore(load_settings().store_url).count() == 1


def test_cli_serve_workers_answer_and_store_from_every_process(home_with_model: dict[str, Any]) -> None:
    """`sentops serve --workers 2`: two processes on one port, each with its own model and
    store writer; every 2xx of either becomes a row once the server has stopped."""
    promote(1)
    port = free_port()
    cmd = [sys.executable, "-m", "sentiment_ops.cli.main", "serve", "--port", str(port), "--workers", "2"]
    cmd += ["--backend", "torch"]  # the tiny model's ONNX export is not what this test is about
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    answered: dict[int, float] = {}  # process id -> its own count of 2xx /predict answers
    sent = 0
    try:

        def ready() -> bool:
            try:
                return httpx.get(url + "/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                return False

        wait_for(ready, timeout=120, interval=0.3)

        def predict(i: int) -> int:
            with httpx.Client(timeout=30) as c:  # a new connection: either process may take it
                return c.post(url + "/predict", json={"text": f"review number {i}"}).status_code

        def both_answered() -> bool:
            nonlocal sent
            with ThreadPoolExecutor(8) as pool:
                assert set(pool.map(predict, range(sent, sent + 16))) == {200}
            sent += 16
            for _ in range(20):  # scrape on new connections until each process has said its count
                with httpx.Client(timeout=10) as c:
                    text = c.get(url + "/metrics").text
                pid = int(_metric(text, "sentops_process_id"))
                ok = 'sentops_requests_total{endpoint="/predict",outcome="2xx"}'
                answered[pid] = _metric(text, ok) if ok + " " in text else 0.0  # none yet here
            return len(answered) == 2 and all(answered.values())

        wait_for(both_answered, timeout=120, interval=0.1)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode in (0, -15), out
    assert out.count("Application startup complete") == 2 and "Traceback" not in out
    assert "with 2 worker processes" in out
    assert InferenceStore(load_settings().store_url).count() == sent


def test_cli_serve_rejects_a_bad_backend(cli: Any) -> None:
    result = cli("serve", "--backend", "tensorflow")
    assert result.exit_code == 2
    assert "is not one of 'torch', 'onnx'" in " ".join(result.stderr.replace("│", " ").split())


def test_starts_in_an_empty_home(running: list[Server]) -> None:
    srv = start_server(serve_settings())  # no registry, no model, no store yet
    running.append(srv)
    with srv.client() as c:
        assert c.get("/health").status_code == 200
        assert c.get("/ready").status_code == 503
        assert c.post("/predict", json={"text": "hi"}).status_code == 503
        assert c.get("/model").json()["last_reload_error"] is None


def test_shutdown_during_a_burst_loses_nothing(home_with_model: dict[str, Any], running: list[Server]) -> None:
    """SIGTERM-style shutdown while requests are in flight: every 2xx has its row."""
    promote(1)
    srv = start_server(serve_settings(batch_max_size=4))
    running.append(srv)

    answered = threading.Event()

    def one(i: int) -> int:
        try:
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                status = c.post("/predict", json={"text": f"in flight {i} " + "word " * 200}).status_code
        except httpx.HTTPError:
            return 0  # refused once shutdown began: not served, not stored
        answered.set()
        return status

    with ThreadPoolExecutor(24) as pool:
        futures = [pool.submit(one, i) for i in range(96)]
        assert answered.wait(60)
        srv.stop()  # while most requests are still queued or in flight
        statuses = [f.result() for f in futures]
    ok = statuses.count(200)
    assert ok > 0 and set(statuses) <= {0, 200, 503}
    assert InferenceStore(load_settings().store_url).count() == ok


def test_worker_processes_share_the_cores() -> None:
    """`--workers N`: each process gets cores / N threads and no more passes at once than
    threads, unless torch_threads is set; one worker keeps the settings as they are."""
    from sentiment_ops.serving.app import worker_settings

    base = load_settings(overrides={"serve.torch_threads": 8, "serve.inference_workers": 2})
    assert worker_settings(base, 1) is base
    four = load_settings(overrides={"serve.inference_workers": 2, "serve.torch_threads": None})
    cores = os.cpu_count() or 1
    per = worker_settings(four, 2).serve
    assert per.torch_threads == max(1, cores // 2)
    assert per.inference_workers == min(2, per.torch_threads)
    # a pass that runs alone in a worker keeps every core (a lone request is not slower)
    from sentiment_ops.serving.holder import solo_threads

    expected_solo = cores if cores > 1 else None
    assert solo_threads(worker_settings(four, 2)) == expected_solo
    kept = worker_settings(base, 4).serve  # set explicitly: kept per worker
    assert (kept.torch_threads, kept.inference_workers) == (8, 2)
    assert base.serve.torch_threads == 8 and four.serve.torch_threads is None  # the originals untouched


def test_request_dependencies_run_on_the_event_loop() -> None:
    """Every dependency of the serving routes is a coroutine: FastAPI runs a plain ``def``
    dependency in a worker thread, a thread hop per dependency per request (two per
    /predict took ~15 % of the event loop's time at 32 clients)."""
    import inspect

    from fastapi.routing import APIRoute

    from sentiment_ops.serving.app import create_app

    app = create_app(load_settings())
    seen: list[str] = []

    def walk(dependant: Any) -> None:
        for sub in dependant.dependencies:
            call = sub.call
            target = call if inspect.isfunction(call) or inspect.ismethod(call) else type(call).__call__
            seen.append(getattr(call, "__name__", type(call).__name__))
            assert inspect.iscoroutinefunction(target), f"{seen[-1]} is not async: it runs in a worker thread"
            walk(sub)

    def routes(items: Any) -> None:  # included routers hold their own routes (FastAPI 0.16x)
        for route in items:
            if isinstance(route, APIRoute):
                walk(route.dependant)
            inner = getattr(route, "original_router", None)
            if inner is not None:
                for dep in inner.dependencies:  # the router's own (the bearer guards)
                    assert inspect.iscoroutinefunction(dep.dependency), f"{dep.dependency} is not async"
                routes(inner.routes)

    routes(app.routes)
    assert {"get_state", "get_request_id"} <= set(seen)
