"""Prometheus metrics of one app, in its own ``CollectorRegistry`` (two apps in one
process, as in tests, never share counters), and the ASGI middleware that counts
requests by endpoint and outcome."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from sentiment_ops.data import LABEL_NAMES
from sentiment_ops.serving.holder import LoadedModel, ReloadFailure

__all__ = ["CONTENT_TYPE_LATEST", "MetricsMiddleware", "ServingMetrics"]

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "sentops_requests",
            "HTTP requests by endpoint and outcome (2xx/4xx/5xx).",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "sentops_request_latency_seconds",
            "HTTP request latency.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "sentops_batch_size", "Texts per model forward pass (micro-batch).", buckets=BATCH_BUCKETS, registry=r
        )
        self.inference = Histogram(
            "sentops_inference_seconds", "Model time per micro-batch.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.predictions = Counter("sentops_predictions", "Predictions by label.", ["label"], registry=r)
        for name in LABEL_NAMES:
            self.predictions.labels(name)
        self.model_version = Gauge(
            "sentops_model_version", "Model version being served (0 = none).", ["name", "alias", "backend"], registry=r
        )
        self.model_loaded_at = Gauge(
            "sentops_model_loaded_timestamp_seconds", "When the serving model was swapped in.", registry=r
        )
        self.reloads = Counter("sentops_reloads", "Model loads by outcome.", ["outcome"], registry=r)
        for outcome in ("success", "failure"):
            self.reloads.labels(outcome)
        self.reload_failed_version = Gauge(
            "sentops_reload_failed_version", "Version of the last failed load (0 = none since).", registry=r
        )
        self.store_rows = Counter("sentops_store_rows_written", "Predictions written to the store.", registry=r)
        self.store_errors = Counter("sentops_store_write_errors", "Failed store writes (retried).", registry=r)
        self.store_pending = Gauge("sentops_store_pending_rows", "Predictions waiting to be written.", registry=r)
        self.store_dead_letters = Counter(
            "sentops_store_dead_letter_rows",
            "Predictions the store refused, kept in its dead_letters table.",
            registry=r,
        )
        self.store_rejected = Counter(
            "sentops_store_rejected_rows",
            "Texts answered 503 because the write-behind queue was full (serve.store_queue_max).",
            registry=r,
        )
        self.store_up = Gauge(
            "sentops_store_up", "1 while the inference store takes writes, 0 while it fails.", registry=r
        )
        self.store_up.set(1)

    # -- hooks (called from the holder, the writer, the batcher) ------------------------
    def model_loaded(self, model: LoadedModel) -> None:
        self.model_version.clear()
        self.model_version.labels(model.name, model.alias, model.backend).set(model.version)
        self.model_loaded_at.set(model.loaded_at.timestamp())
        self.reloads.labels("success").inc()
        self.reload_failed_version.set(0)

    def reload_failed(self, failure: ReloadFailure) -> None:
        self.reloads.labels("failure").inc()
        self.reload_failed_version.set(failure.version or 0)

    def rows_written(self, n: int, _seconds: float) -> None:
        self.store_rows.inc(n)

    def store_error(self, _message: str) -> None:
        self.store_errors.inc()

    def rows_dead_lettered(self, n: int) -> None:
        self.store_dead_letters.inc(n)

    def rows_rejected(self, n: int) -> None:
        self.store_rejected.inc(n)

    def render(self, pending_rows: int, store_up: bool = True) -> bytes:
        self.store_pending.set(pending_rows)
        self.store_up.set(1 if store_up else 0)
        return generate_latest(self.registry)


def _outcome(status: int) -> str:
    return f"{status // 100}xx"


class MetricsMiddleware:
    """Pure ASGI (no per-request task or body copy, unlike ``BaseHTTPMiddleware``)."""

    def __init__(self, app: Any, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(endpoint, _outcome(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
