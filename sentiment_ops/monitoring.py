"""Drift monitoring: the IO around the detectors in ``drift.py``.

``run_drift_check`` resolves an alias (or version) to its MLflow run, downloads the
reference embeddings logged with that run, reads the version's last N served predictions
(with the embeddings the server logged: no second forward pass), runs the detectors and
records the check in the inference store and as metrics of an MLflow monitoring run
(experiment ``<experiment>-monitoring``, one run per model version, step = check id).

``embed_reference`` (re)computes a version's reference from held-out data with the
version's own encoder and logs it to the version's run.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sentiment_ops.config import Settings
from sentiment_ops.drift import DriftReport, detect
from sentiment_ops.errors import ConfigError, DataError, NotEnoughDataError, NotFoundError
from sentiment_ops.reference import ReferenceMeta, build_reference, download_reference, log_reference
from sentiment_ops.registry import Registry, VersionInfo, mlflow_errors
from sentiment_ops.store import InferenceStore, open_store

log = logging.getLogger(__name__)

MONITORING_KIND = "monitoring"
CHECK_SEED = 0  # permutation seed: the same window and reference give the same p-value


def monitoring_experiment(settings: Settings) -> str:
    return f"{settings.mlflow.experiment}-monitoring"


def resolve_version(registry: Registry, version: int | None, alias: str | None) -> VersionInfo:
    """A version by number, or the version an alias points to (with a clear message)."""
    if version is not None:
        info = registry.get_version(version)
    else:
        alias = alias or registry.settings.serve.alias
        try:
            info = registry.version_for_alias(alias)
        except NotFoundError as exc:
            raise NotFoundError(
                f"alias {alias!r} of model {registry.model_name!r} is not set (sentops promote --version N)"
            ) from exc
    if not info.run_id:
        raise NotFoundError(f"model {info.name!r} version {info.version} has no MLflow run")
    return info


def serving_cache_dir(settings: Settings, info: VersionInfo) -> Path:
    """The folder where the server caches a version's ONNX export (shared with it)."""
    return settings.home / "serving-cache" / f"{info.name}-v{info.version}-{(info.run_id or '')[:12]}"


def embed_reference(
    settings: Settings,
    version: int | None = None,
    alias: str | None = None,
    data: str | None = None,
    samples: int | None = None,
    backend: str | None = None,
) -> ReferenceMeta:
    """Embed held-out texts (the corpus's validation split, never its training split) with
    the version's own encoder and the serving backend (default ``serve.backend``), and log
    them as the reference of the version's run."""
    from sentiment_ops.pyfunc import load_pyfunc

    registry = Registry(settings)
    info = resolve_version(registry, version, alias)
    model = load_pyfunc(registry.model_uri(info.version)).model
    assert model is not None  # load_pyfunc guarantees it
    backend = backend or settings.serve.backend
    ref = build_reference(
        model,
        data or settings.drift.reference_data,
        samples or settings.drift.reference_samples,
        backend=backend,
        cache_dir=serving_cache_dir(settings, info) if backend == "onnx" else None,
        max_tokens=settings.serve.batch_max_tokens,
    )
    ref.meta.model_version = info.version
    with mlflow_errors(f"log reference to run {info.run_id}"):
        log_reference(registry.client, str(info.run_id), ref)
    return ref.meta


def _window_arrays(rows: list[Any]) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    emb = np.vstack([np.asarray(r.embedding, dtype=np.float32) for r in rows])
    labels = np.array([-1 if r.prediction is None else int(r.prediction) for r in rows], dtype=np.int64)
    texts = [r.text or f"(text not stored: prediction {r.id})" for r in rows]
    return emb, labels, texts, [r.id for r in rows]


def run_drift_check(
    settings: Settings,
    *,
    alias: str | None = None,
    version: int | None = None,
    window: int | None = None,
    alpha: float | None = None,
    permutations: int | None = None,
    method: str | None = None,
    record: bool = True,
    store: InferenceStore | None = None,
) -> DriftReport:
    """Compare the last ``window`` served predictions of a version with its reference.

    Raises NotFoundError (unknown alias/version, or no reference: run
    ``sentops embed-reference``), NotEnoughDataError (fewer than ``drift.min_rows`` logged
    predictions with embeddings), DataError (window and reference from different spaces)."""
    cfg = settings.drift
    window = window or cfg.window
    alpha = alpha if alpha is not None else cfg.alpha
    permutations = permutations or cfg.permutations
    method = method or cfg.method
    if method != "cosine" and (permutations + 1) * alpha <= 2:
        # two statistics: the smallest reachable aggregate p is about 2 / (permutations + 1)
        raise ConfigError(
            f"{permutations} permutations cannot reach alpha {alpha:g}: "
            f"use at least {math.ceil(2 / alpha)} (drift.permutations)"
        )
    registry = Registry(settings)
    info = resolve_version(registry, version, alias)
    own_store = store is None
    store = store or open_store(settings.store_url, settings.store.store_text)
    try:
        backend = settings.serve.backend  # the space of the reference compared with
        rows = store.window(registry.model_name, info.version, window, backend=backend)
        rows = [r for r in rows if r.embedding is not None]
        if len(rows) < cfg.min_rows:
            _check_embedding_space(store, registry.model_name, info.version, window, backend, len(rows))
            raise NotEnoughDataError(
                f"only {len(rows)} logged predictions with embeddings for {registry.model_name!r} "
                f"version {info.version} (need at least {cfg.min_rows}, window {window}); "
                "serve more traffic or lower drift.min_rows"
            )
        with tempfile.TemporaryDirectory() as tmp:
            # the reference embedded by the backend that served the window
            ref = download_reference(registry.client, str(info.run_id), Path(tmp), settings.serve.backend)
        emb, labels, texts, ids = _window_arrays(rows)
        if emb.shape[1] != ref.embeddings.shape[1]:
            raise DataError(
                f"window embeddings have {emb.shape[1]} dimensions but the reference of version "
                f"{info.version} has {ref.embeddings.shape[1]}: run `sentops embed-reference --version {info.version}`"
            )
        known = labels >= 0
        report = detect(
            ref.embeddings,
            emb,
            ref_labels=ref.predicted,
            win_labels=labels[known] if known.any() else None,
            texts=texts,
            ids=ids,
            alpha=alpha,
            permutations=permutations,
            cosine_threshold=cfg.cosine_threshold,
            method=method,
            whiten_components=cfg.whiten_components,
            top_k=cfg.top_k,
            seed=CHECK_SEED,
        )
        report.window = window
        report.model_name = registry.model_name
        report.model_version = info.version
        report.alias = None if version is not None else (alias or settings.serve.alias)
        report.created_at = datetime.now(UTC).isoformat(timespec="seconds")
        report.reference = {
            k: getattr(ref.meta, k)
            for k in ("data", "split", "data_hash", "count", "pooling", "backend", "created", "run_id")
        }
        if record:
            check_id = store.record_drift_check(registry.model_name, info.version, report.to_dict())
            report.check_id = check_id
            report.monitoring_run_id = log_check_to_mlflow(registry, settings, report, check_id)
        return report
    finally:
        if own_store:
            store.close()


def _check_embedding_space(
    store: InferenceStore, model_name: str, version: int, window: int, backend: str, matching: int
) -> None:
    """One line when the recent traffic of a version was embedded in another space than the
    reference: DataError for another backend, NotEnoughDataError when the only other rows
    are of unknown backend (logged before the store recorded it). Those rows are left out."""
    others = {b: n for b, n in store.backend_counts(model_name, version, window).items() if b != backend}
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


def _monitoring_run(registry: Registry, settings: Settings, version: int) -> str:
    client = registry.client
    experiment_id = registry.experiment_id(monitoring_experiment(settings))
    with mlflow_errors("monitoring run"):
        runs = client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`sentops.kind` = '{MONITORING_KIND}' AND tags.`sentops.model_name` = '{registry.model_name}' "
                f"AND tags.`sentops.model_version` = '{version}'"
            ),
            max_results=1,
        )
        if runs:
            return str(runs[0].info.run_id)
        run = client.create_run(
            experiment_id,
            run_name=f"monitor-{registry.model_name}-v{version}",
            tags={
                "sentops.kind": MONITORING_KIND,
                "sentops.model_name": registry.model_name,
                "sentops.model_version": str(version),
            },
        )
        client.set_terminated(run.info.run_id, "FINISHED")
        return str(run.info.run_id)


def log_check_to_mlflow(registry: Registry, settings: Settings, report: DriftReport, check_id: int) -> str:
    """Log one check as metrics (step = the store's check id) of the version's monitoring run."""
    from mlflow.entities import Metric

    assert report.model_version is not None
    run_id = _monitoring_run(registry, settings, report.model_version)
    now = int(time.time() * 1000)
    values = {
        "drift_detected": float(report.drift),
        "drift_p_value": report.p_value,
        "drift_mmd2": report.mmd2,
        "drift_mmd_p_value": report.mmd_p_value,
        "drift_cosine_distance": report.cosine_distance,
        "drift_window_rows": float(report.n_rows),
        "drift_check_seconds": report.seconds,
    }
    if report.nn_p_value is not None and report.nn_distance2 is not None:
        values["drift_nn_distance2"] = report.nn_distance2
        values["drift_nn_p_value"] = report.nn_p_value
    if report.label_mix:
        values["drift_window_positive_share"] = float(report.label_mix["window_positive"])
        values["drift_label_p_value"] = float(report.label_mix["p_value"])
    with mlflow_errors(f"log drift check to run {run_id}"):
        registry.client.log_batch(run_id, metrics=[Metric(k, float(v), now, check_id) for k, v in values.items()])
        registry.client.set_tag(run_id, "sentops.last_check_id", str(check_id))
    return run_id


def drift_history(settings: Settings, limit: int = 1000, version: int | None = None) -> list[dict[str, Any]]:
    """Recorded checks of the configured model, oldest first (optionally one version)."""
    store = open_store(settings.store_url, settings.store.store_text)
    try:
        rows = store.drift_history(settings.mlflow.model_name, limit=limit)
    finally:
        store.close()
    return [r for r in rows if version is None or r["model_version"] == version]


def plot_history(history: list[dict[str, Any]], path: Path, alpha: float, threshold: float) -> Path:
    """Two panels over time: the MMD² p-value (log scale, with alpha) and the seed's cosine
    score (with its threshold); checks that found drift are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        raise NotEnoughDataError("no drift checks recorded yet: run `sentops drift` first")
    times = [h["created_at"] for h in history]
    p = [max(h["p_value"] or 1.0, 1e-6) for h in history]
    cos = [h["cosine_distance"] or 0.0 for h in history]
    drift = np.array([bool(h["drift"]) for h in history])
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    ax1.plot(times, p, marker="o", color="tab:blue", label="drift test p-value")
    ax1.axhline(alpha, color="tab:red", linestyle="--", label=f"alpha {alpha:g}")
    if drift.any():
        ax1.scatter(
            [t for t, d in zip(times, drift, strict=True) if d],
            np.array(p)[drift],
            color="tab:red",
            zorder=3,
            label="drift",
        )
    ax1.set_yscale("log")
    ax1.set_ylim(min([*p, alpha]) / 2, 1.5)
    ax1.set_ylabel("p-value")
    ax1.legend(loc="upper right", fontsize=8)
    ax2.plot(times, cos, marker="o", color="tab:green", label="cosine distance of centroids")
    ax2.axhline(threshold, color="tab:gray", linestyle="--", label=f"seed threshold {threshold:g}")
    ax2.set_ylabel("cosine distance")
    ax2.legend(loc="center right", fontsize=8)
    fig.suptitle(f"drift checks of {history[-1]['model_name']}")
    fig.autofmt_xdate()
    fig.tight_layout()
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise DataError(f"cannot write plot: folder {path.parent} does not exist")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
