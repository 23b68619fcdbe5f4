"""A drift check: the IO around the detectors (``drift.detectors``).

``run_drift_check`` resolves an alias (or version) to its MLflow run, downloads the
reference embeddings logged with that run, reads the version's last N served predictions
(with the embeddings the server logged: no second forward pass), runs the detectors and
records the check (``drift.history``: the inference store and an MLflow monitoring run);
with ``store.retention_days`` set it then prunes the store (``apply_retention``).
Served texts are put in the report only when asked (``show_texts``) and kept by the store
(``store.store_text``); the recorded check never holds them (ids and distances only).

``embed_reference`` (re)computes a version's reference from held-out data with the
version's own encoder and logs it to the version's run (``drift.reference``).
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sentiment_ops.config import Settings
from sentiment_ops.drift.decide import apply_calibrated, apply_monitor, calibrated_test
from sentiment_ops.drift.detectors import TEXTS_NOT_KEPT, DetectOptions, DriftReport, detect, reference_classes
from sentiment_ops.drift.history import log_check_to_mlflow
from sentiment_ops.drift.reference import (
    Reference,
    ReferenceMeta,
    ReferencePlan,
    download_reference,
    embed_and_log,
)
from sentiment_ops.errors import DataError, NotEnoughDataError, StoreError
from sentiment_ops.inference.onnx import export_cache_dir
from sentiment_ops.store import InferenceStore, PredictionRecord, using_store
from sentiment_ops.tracking.predictors import resolve_version
from sentiment_ops.tracking.registry import Registry

log = logging.getLogger(__name__)

CHECK_SEED = 0  # permutation seed: the same window and reference give the same p-value


def embed_reference(
    settings: Settings,
    registry: Registry,
    version: int | None = None,
    alias: str | None = None,
    data: str | None = None,
    samples: int | None = None,
    backend: str | None = None,
) -> ReferenceMeta:
    """Embed held-out texts (the corpus's validation split, never its training split) with
    the version's own encoder and the serving backend (default ``serve.backend``), and log
    them as the reference of the version's run (in ``registry``)."""
    info = resolve_version(registry, version, alias)
    model = registry.load_model(info.version)
    backend = backend or settings.serve.backend
    return embed_and_log(
        registry,
        str(info.run_id),
        model,
        ReferencePlan(
            data or settings.drift.reference_data,
            samples or settings.drift.reference_samples,
            settings.drift.calibration_samples,
        ),
        backend=backend,
        max_tokens=settings.serve.batch_max_tokens,
        cache_dir=export_cache_dir(settings.home, info.name, info.version, info.run_id) if backend == "onnx" else None,
        model_version=info.version,
    )


def _window_arrays(rows: list[Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    emb = np.vstack([np.asarray(r.embedding, dtype=np.float32) for r in rows])
    labels = np.array([-1 if r.prediction is None else int(r.prediction) for r in rows], dtype=np.int64)
    return emb, labels, [r.id for r in rows]


def run_drift_check(
    settings: Settings,
    registry: Registry,
    *,
    alias: str | None = None,
    version: int | None = None,
    record: bool = True,
    store: InferenceStore | None = None,
    source: str = "api",
    show_texts: bool = False,
) -> DriftReport:
    """Compare the last ``drift.window`` served predictions of a version (of ``registry``'s
    model) with its reference (``source="batch"``: the last rows ``sentops score --log`` wrote
    instead), tested and decided as the ``drift`` settings say (method, alpha, permutations).
    ``show_texts``: the farthest rows carry their texts (never when ``store.store_text`` is
    false: ``report.texts`` then says "not kept"); the recorded check never does.

    Raises NotFoundError (unknown alias/version, or no reference: run
    ``sentops embed-reference``), NotEnoughDataError (fewer than ``drift.min_rows`` logged
    predictions with embeddings), DataError (window and reference from different spaces)."""
    cfg = settings.drift
    info = resolve_version(registry, version, alias)
    with using_store(settings, store) as db:
        backend = settings.serve.backend  # the space of the reference compared with
        rows = served_window(db, settings, info.version, cfg.window, backend, source)
        with tempfile.TemporaryDirectory() as tmp:
            # the reference embedded by the backend that served the window
            ref = download_reference(registry, str(info.run_id), Path(tmp), backend)
        report = compare(ref, rows, settings, info.version, show_texts)
        if cfg.false_alarm_every is not None and cfg.method != "cosine":
            previous = last_monitor_state(db, registry.model_name, info.version, source)
            apply_monitor(report, settings, previous, calibrated_test(ref, cfg.whiten_components), rows)
        report.model_name = registry.model_name
        report.alias = None if version is not None else (alias or settings.serve.alias)
        report.source = source
        if record:
            check_id = db.record_drift_check(registry.model_name, info.version, report.to_dict())
            report.check_id = check_id
            report.monitoring_run_id = log_check_to_mlflow(registry, settings, report, check_id)
            report.pruned = apply_retention(db, settings)
        return report


def apply_retention(store: InferenceStore, settings: Settings) -> dict[str, Any] | None:
    """The drift job's prune after a recorded check, when ``store.retention_days`` is set
    (None when not). A store that fails to prune does not hide the check: the failure is
    logged and returned as ``{"error": ...}``."""
    days = settings.store.retention_days
    if days is None:
        return None
    try:
        return store.prune(days).to_dict()
    except StoreError as exc:
        log.warning("retention: %s", exc)
        return {"days": days, "error": str(exc)}


def served_window(
    store: InferenceStore, settings: Settings, version: int, window: int, backend: str, source: str = "api"
) -> list[PredictionRecord]:
    """The version's last ``window`` rows from ``source`` embedded by ``backend``
    (NotEnoughDataError below ``drift.min_rows``; DataError when another backend served them)."""
    model_name = settings.mlflow.model_name
    rows = [
        r for r in store.window(model_name, version, window, backend=backend, source=source) if r.embedding is not None
    ]
    if len(rows) < settings.drift.min_rows:
        _check_embedding_space(store, model_name, version, window, backend, len(rows), source)
        kind = "" if source == "api" else f"{source} "
        raise NotEnoughDataError(
            f"only {len(rows)} logged {kind}predictions with embeddings for {model_name!r} "
            f"version {version} (need at least {settings.drift.min_rows}, window {window}); "
            "serve more traffic or lower drift.min_rows"
        )
    return rows


def compare(
    ref: Reference,
    rows: list[PredictionRecord],
    settings: Settings,
    version: int,
    show_texts: bool = False,
) -> DriftReport:
    """Run the detectors on one window against the reference (no IO). The farthest rows
    carry their texts (None for a row stored without it) only with ``show_texts`` and
    ``store.store_text``."""
    emb, labels, ids = _window_arrays(rows)
    kept = settings.store.store_text
    texts = [r.text or None for r in rows] if show_texts and kept else None
    if emb.shape[1] != ref.embeddings.shape[1]:
        raise DataError(
            f"window embeddings have {emb.shape[1]} dimensions but the reference of version "
            f"{version} has {ref.embeddings.shape[1]}: run `sentops embed-reference --version {version}`"
        )
    known = labels >= 0
    cfg = settings.drift
    report = detect(
        ref.embeddings,
        emb,
        ref_labels=ref.predicted,
        win_labels=labels[known] if known.any() else None,
        texts=texts,
        ids=ids,
        options=DetectOptions.of(cfg, seed=CHECK_SEED),
        classes=reference_classes(ref.meta.label_mix),
    )
    if cfg.method == "calibrated":
        apply_calibrated(report, calibrated_test(ref, cfg.whiten_components), emb, labels)
    report.window = cfg.window
    if not kept:
        report.texts = TEXTS_NOT_KEPT
    report.model_version = version
    report.created_at = datetime.now(UTC).isoformat(timespec="seconds")
    keys = ("data", "split", "data_hash", "count", "pooling", "backend", "created", "run_id", "calibration_count")
    report.reference = {k: getattr(ref.meta, k) for k in keys}
    return report


def last_monitor_state(store: InferenceStore, model_name: str, version: int, source: str) -> dict[str, Any] | None:
    """The repeated mode's state after the version's newest recorded check of ``source``
    (None: none recorded yet, or the newest ran as a single check)."""
    for check in reversed(store.drift_history(model_name, limit=50, version=version)):
        details = check.get("details") or {}
        if details.get("source", "api") == source:
            state = details.get("monitor")
            return state if isinstance(state, dict) else None
    return None


def _check_embedding_space(
    store: InferenceStore, model_name: str, version: int, window: int, backend: str, matching: int, source: str = "api"
) -> None:
    """One line when the recent traffic of a version was embedded in another space than the
    reference: DataError for another backend, NotEnoughDataError when the only other rows
    are of unknown backend (logged before the store recorded it). Those rows are left out."""
    others = {b: n for b, n in store.backend_counts(model_name, version, window, source).items() if b != backend}
    if not others:
        return
    held = ", ".join(
        f"{n} rows embedded by {b}" if b is not None else f"{n} rows of unknown backend (logged before it was recorded)"
        for b, n in sorted(others.items(), key=lambda kv: -kv[1])
    )
    message = (
        f"the window holds {held} but the reference of version {version} was embedded by {backend} "
        f"(only {matching} rows match): drift compares like with like only; run the drift check with the "
        "backend that serves (serve.backend / SENTOPS_SERVE__BACKEND), or serve more traffic with this one"
    )
    if set(others) == {None}:  # only rows from before the upgrade: wait for new traffic (exit 4)
        raise NotEnoughDataError(message)
    raise DataError(message)  # another backend serves: a configuration mismatch (exit 65)
