"""Prometheus metrics of one app, in its own ``CollectorRegistry`` (two apps in one
process, as in tests, never share counters), and the ASGI middleware that counts
requests by endpoint and outcome.

Besides the serving metrics the registry holds the process and GC collectors of
``prometheus_client``, ``sentops_build_info`` (sentops version, model name and version,
backend: follows a hot reload) and the drift results read from the store at each scrape
(``DriftCollector``)."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.gc_collector import GCCollector
from prometheus_client.registry import Collector

from sentiment_ops import __version__
from sentiment_ops.errors import StoreError
from sentiment_ops.labels import BINARY
from sentiment_ops.serving.holder import LoadedModel, ReloadFailure
from sentiment_ops.store import DriftLog

__all__ = ["CONTENT_TYPE_LATEST", "DriftCollector", "MetricsMiddleware", "ServingMetrics"]

log = logging.getLogger("sentiment_ops.serving")

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServingMetrics:
    def __init__(self, model_name: str = "", backend: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, …
        GCCollector(registry=r)  # CPython: python_gc_objects_collected_total, …
        self.build_info = Info(
            "sentops_build",
            "sentops version, and the model (name, version: empty when none is loaded) and backend it serves.",
            registry=r,
        )
        self.pid = Gauge(
            "sentops_process_id", "The server process's id (which of `serve --workers` answered).", registry=r
        )
        self.pid.set(os.getpid())
        self._model_name = model_name
        self._backend = backend
        self._set_build_info(None)
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
        self.queue_wait = Histogram(
            "sentops_queue_wait_seconds",
            "Per text: from its request's arrival at the batcher to the start of its micro-batch's passes.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_threads = Counter(
            "sentops_batch_threads",
            "Micro-batches by the intra-op threads of their passes: 'one' (under load, batches run "
            "side by side) or 'many' (a batch that ran alone on the many-thread session).",
            ["threads"],
            registry=r,
        )
        for layout in ("one", "many"):
            self.batch_threads.labels(layout)
        self.predictions = Counter(
            "sentops_predictions", "Predictions by label (a class name of the serving model).", ["label"], registry=r
        )
        for name in BINARY.names:  # until a model is loaded; each loaded model adds its classes
            self.predictions.labels(name)
        self._model_metrics(r)
        self._store_metrics(r)

    def _model_metrics(self, r: CollectorRegistry) -> None:
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

    def _store_metrics(self, r: CollectorRegistry) -> None:
        self.store_rows = Counter("sentops_store_rows_written", "Predictions written to the store.", registry=r)
        self.store_write = Histogram(
            "sentops_store_write_seconds",
            "Seconds per batched insert of the store writer.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
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
    def _set_build_info(self, model: LoadedModel | None) -> None:
        self.build_info.info(
            {
                "version": __version__,
                "model_name": model.name if model else self._model_name,
                "model_version": str(model.version) if model else "",
                "backend": model.backend if model else self._backend,
            }
        )

    def model_loaded(self, model: LoadedModel) -> None:
        self._set_build_info(model)
        self.model_version.clear()
        self.model_version.labels(model.name, model.alias, model.backend).set(model.version)
        self.model_loaded_at.set(model.loaded_at.timestamp())
        for name in model.classes.names:
            self.predictions.labels(name)
        self.reloads.labels("success").inc()
        self.reload_failed_version.set(0)

    def reload_failed(self, failure: ReloadFailure) -> None:
        self.reloads.labels("failure").inc()
        self.reload_failed_version.set(failure.version or 0)

    def rows_written(self, n: int, seconds: float) -> None:
        self.store_rows.inc(n)
        self.store_write.observe(seconds)

    def store_error(self, _message: str) -> None:
        self.store_errors.inc()

    def rows_dead_lettered(self, n: int) -> None:
        self.store_dead_letters.inc(n)

    def rows_rejected(self, n: int) -> None:
        self.store_rejected.inc(n)

    def watch_drift(self, store: Callable[[], DriftLog | None], model_name: str) -> None:
        """Expose the drift checks of ``model_name`` that ``store()`` holds."""
        self.registry.register(DriftCollector(store, model_name))

    def render(self, pending_rows: int, store_up: bool = True) -> bytes:
        self.store_pending.set(pending_rows)
        self.store_up.set(1 if store_up else 0)
        return generate_latest(self.registry)


class DriftCollector(Collector):
    """The last drift check of each model version (the ``DRIFT_VERSIONS`` newest versions
    checked), read from the store at each scrape: whichever process ran the check
    (``sentops drift``, a cron job, another replica), every replica shows it, and an alert
    rule can fire on it. A store that cannot be read leaves these out of the scrape (logged
    once per outage) and every other metric in."""

    def __init__(self, store: Callable[[], DriftLog | None], model_name: str) -> None:
        self._store = store
        self.model_name = model_name
        self._failing = False

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the families depend on the store: nothing to check at register time

    def collect(self) -> Iterator[Metric]:
        store = self._store()
        if store is None:
            return
        try:
            checks = store.latest_drift_checks(self.model_name, DRIFT_VERSIONS)
        except StoreError as exc:
            if not self._failing:
                log.warning("drift metrics left out of /metrics: %s", exc)
            self._failing = True
            return
        self._failing = False
        labels = ["model_name", "model_version"]
        p_value = GaugeMetricFamily(
            "sentops_drift_p_value", "p-value of the last drift check of a model version.", labels=labels
        )
        detected = GaugeMetricFamily(
            "sentops_drift_detected", "1 when the last drift check of a model version found drift.", labels=labels
        )
        window = GaugeMetricFamily(
            "sentops_drift_window_rows", "Served predictions the last drift check compared.", labels=labels
        )
        at = GaugeMetricFamily(
            "sentops_drift_check_timestamp_seconds", "When the last drift check of a model version ran.", labels=labels
        )
        monitor = _monitor_families(labels)
        label_mix = _label_mix_families(labels)
        for check in checks:
            values = [self.model_name, "" if check["model_version"] is None else str(check["model_version"])]
            if check["p_value"] is not None and not math.isnan(check["p_value"]):
                p_value.add_metric(values, float(check["p_value"]))
            detected.add_metric(values, 1.0 if check["drift"] else 0.0)
            window.add_metric(values, float(check["n_rows"]))
            at.add_metric(values, check["created_at"].timestamp())
            state = check.get("monitor")
            if state:  # the repeated mode (drift.false_alarm_every): its running state
                for family, key in zip(monitor, MONITOR_KEYS, strict=True):
                    family.add_metric(values, float(state.get(key) or 0.0))
            _add_label_mix(label_mix, values, check.get("label_mix"))
        yield from (p_value, detected, window, at, *monitor, *label_mix)


MONITOR_KEYS = ("statistic", "threshold", "checks_since_alarm", "expected_checks_between_false_alarms")


def _monitor_families(labels: list[str]) -> list[GaugeMetricFamily]:
    helps = (
        ("sentops_drift_monitor_statistic", "CUSUM statistic of the repeated drift checks; alarms at the threshold."),
        ("sentops_drift_monitor_threshold", "CUSUM threshold of the repeated drift checks."),
        ("sentops_drift_checks_since_alarm", "Repeated drift checks since the last alarm (or the first check)."),
        (
            "sentops_drift_expected_checks_between_false_alarms",
            "Expected checks between false alarms the repeated mode is set to (false_alarm_every / check_every).",
        ),
    )
    return [GaugeMetricFamily(name, text, labels=labels) for name, text in helps]


def _label_mix_families(labels: list[str]) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "sentops_drift_label_p_value",
            "p-value of the label-mix test of the last drift check (chi-square over the classes; "
            "two-proportion for a binary model).",
            labels=labels,
        ),
        GaugeMetricFamily(
            "sentops_drift_class_share",
            "Predicted share of each class in the last drift check's window and in its reference.",
            labels=[*labels, "class", "sample"],
        ),
    )


def _add_label_mix(families: tuple[GaugeMetricFamily, GaugeMetricFamily], values: list[str], mix: Any) -> None:
    """The label mix of one check: its p-value and each class's share (window, reference)."""
    if not isinstance(mix, dict) or mix.get("p_value") is None:
        return
    p_value, share = families
    p_value.add_metric(values, float(mix["p_value"]))
    for sample in ("window", "reference"):
        shares = mix.get(f"{sample}_shares")
        if not isinstance(shares, dict):  # a check recorded before per-class shares: the positive one
            positive = mix.get(f"{sample}_positive")
            shares = {} if positive is None else {"positive": positive, "negative": 1.0 - float(positive)}
        for name, value in shares.items():
            share.add_metric([*values, str(name), sample], float(value))


DRIFT_VERSIONS = 10  # model versions with drift series on /metrics, newest first


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
