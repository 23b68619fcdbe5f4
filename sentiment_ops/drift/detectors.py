"""Drift detectors over pooled embeddings (pure numpy: no MLflow, no files).

Signals that compare a window of served predictions with a model version's reference:

1. ``cosine_centroid_distance``: the seed system's score, ``1 - cos(mean(ref), mean(win))``,
   against a fixed threshold (0.30). Kept for continuity; it is not calibrated: with no
   shift it falls with the window size, and real shifts (another domain, a share of new
   texts) often stay far below 0.30.
2. ``permutation_test``: a two-sample permutation test. Statistics: the unbiased MMD² with
   an RBF kernel (bandwidth: median heuristic on the pooled sample) and the mean squared
   distance of the window rows to their nearest reference row, both on the pooled sample
   PCA-whitened to a few dozen components. Each gets a permutation p-value with the +1
   correction, ``p = (1 + #{perm ≥ observed}) / (1 + B)``; the decision uses their min-p
   aggregate, calibrated over the same permutations. Its false-alarm rate is alpha over
   random draws of the reference, not for one fixed reference (docs/drift.md): the default
   method, ``calibrated`` (``drift.calibrated``, applied by ``drift.check``), is.
   ``mmd_permutation_test`` is the plain MMD² test on raw embeddings.
3. ``label_mix_test``: the predicted positive share of the window against the reference's
   (two-proportion z-test), a label shift signal.
4. ``farthest_texts``: the window rows farthest from their nearest reference neighbour, so a
   person sees what changed: their ids and distances, and their texts only when given (a
   check shows served texts only when asked: ``sentops drift --show-texts``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sentiment_ops.drift.two_sample import as_2d, permutation_test, squared_distances


def cosine_centroid_distance(ref: np.ndarray, win: np.ndarray) -> float:
    """The seed's drift score: cosine distance between the two mean embeddings."""
    a = as_2d(ref, "ref").mean(axis=0)
    b = as_2d(win, "win").mean(axis=0)
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    if denom == 0.0:
        return 0.0 if not a.any() and not b.any() else 1.0
    return float(1.0 - np.dot(a, b) / denom)


@dataclass
class LabelMix:
    reference_positive: float  # predicted positive share of the reference
    window_positive: float
    p_value: float  # two-sided two-proportion z-test
    reference_n: int
    window_n: int


def label_mix_test(ref_labels: np.ndarray, win_labels: np.ndarray) -> LabelMix:
    """Compare the predicted positive share of the window with the reference's."""
    r = np.asarray(ref_labels).astype(np.int64)
    w = np.asarray(win_labels).astype(np.int64)
    n1, n2 = len(r), len(w)
    if n1 == 0 or n2 == 0:
        raise ValueError("label mix needs labels on both sides")
    p1, p2 = float((r == 1).mean()), float((w == 1).mean())
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0.0:
        p_value = 1.0 if p1 == p2 else 0.0
    else:
        z = abs(p1 - p2) / se
        p_value = math.erfc(z / math.sqrt(2.0))
    return LabelMix(p1, p2, float(p_value), n1, n2)


def nearest_reference_distance(ref: np.ndarray, win: np.ndarray) -> np.ndarray:
    """For each window row, the Euclidean distance to its nearest reference row."""
    x, y = as_2d(ref, "ref"), as_2d(win, "win")
    return np.sqrt(squared_distances(y, x).min(axis=1))


def farthest_texts(
    ref: np.ndarray,
    win: np.ndarray,
    texts: Sequence[str | None] | None = None,
    k: int = 5,
    ids: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The ``k`` window rows farthest from the reference, farthest first: index, id and
    distance, and ``text`` only when ``texts`` are given."""
    if k <= 0:
        return []
    if texts is not None and len(texts) != len(win):
        raise ValueError(f"{len(texts)} texts for {len(win)} window rows")
    dist = nearest_reference_distance(ref, win)
    order = np.argsort(-dist, kind="stable")[:k]
    out = []
    for i in order:
        row: dict[str, Any] = {"index": int(i), "id": None if ids is None else ids[i], "distance": float(dist[i])}
        if texts is not None:
            row["text"] = texts[i]
        out.append(row)
    return out


TEXTS_SHOWN, TEXTS_HIDDEN, TEXTS_NOT_KEPT = "shown", "hidden", "not kept"


METHODS = ("calibrated", "mmd_nn", "mmd", "cosine")


@dataclass
class DriftReport:
    """Everything one drift check found. ``drift`` is the decision (by ``method``)."""

    window: int  # rows asked for
    n_rows: int  # rows used
    n_reference: int
    # what decides: "mmd_nn" (min-p of MMD² and nearest-reference distance, default),
    # "mmd" (MMD² alone) or "cosine" (the seed's fixed threshold)
    method: str
    drift: bool
    # the seed's score
    cosine_distance: float
    cosine_threshold: float
    cosine_drift: bool
    # the calibrated permutation test
    p_value: float  # of the calibrated test that ``method`` names ("mmd_nn" for "cosine")
    alpha: float
    test_drift: bool  # p_value < alpha
    mmd2: float
    mmd_p_value: float
    nn_distance2: float | None
    nn_p_value: float | None
    bandwidth: float
    whiten_components: int
    permutations: int
    # label shift
    label_mix: dict[str, Any]
    label_drift: bool
    farthest: list[dict[str, Any]] = field(default_factory=list)
    # the texts of ``farthest``: "shown" (asked for), "hidden" (the default: ids and
    # distances only) or "not kept" (store.store_text is false: there are none to show)
    texts: str = TEXTS_HIDDEN
    seconds: float = 0.0
    model_name: str | None = None
    model_version: int | None = None
    alias: str | None = None
    source: str = "api"  # whose rows: "api" (served) or "batch" (sentops score --log)
    created_at: str | None = None
    reference: dict[str, Any] = field(default_factory=dict)
    check_id: int | None = None  # id of the check in the inference store, once recorded
    monitoring_run_id: str | None = None  # MLflow run holding the check's metrics
    pruned: dict[str, Any] | None = None  # what the retention pruned after the check (store.retention_days)
    # "single" (this check decides at alpha) or "repeated" (a CUSUM over the checks decides)
    mode: str = "single"
    guarantee: str = ""  # the false-alarm guarantee of the decision, in one sentence
    calibrated: dict[str, Any] | None = None  # the calibrated test (method "calibrated")
    monitor: dict[str, Any] | None = None  # the repeated mode's running state after this check

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DetectOptions:
    """How ``detect`` tests and decides: the ``drift`` settings it reads, and the seed."""

    alpha: float = 0.01
    permutations: int = 500
    cosine_threshold: float = 0.30
    method: str = "mmd_nn"
    whiten_components: int = 64
    top_k: int = 5
    seed: int = 0

    @classmethod
    def of(cls, drift: Any, seed: int = 0) -> DetectOptions:
        """The options of a ``drift`` settings section (``Settings.drift``)."""
        return cls(
            alpha=drift.alpha,
            permutations=drift.permutations,
            cosine_threshold=drift.cosine_threshold,
            method=drift.method,
            whiten_components=drift.whiten_components,
            top_k=drift.top_k,
            seed=seed,
        )


def detect(
    ref: np.ndarray,
    win: np.ndarray,
    *,
    ref_labels: np.ndarray | None = None,
    win_labels: np.ndarray | None = None,
    texts: Sequence[str | None] | None = None,
    ids: Sequence[str] | None = None,
    options: DetectOptions = DetectOptions(),
) -> DriftReport:
    """Run every detector on one window and decide. ``texts``: the window's texts, put
    beside the farthest rows (None: ids and distances only)."""
    alpha, method = options.alpha, options.method
    if method not in METHODS:
        raise ValueError(f"unknown drift method {method!r} ({' | '.join(METHODS)})")
    if method == "calibrated":  # needs a calibration set: drift.check applies it over this
        method = "mmd_nn"
    start = time.perf_counter()
    cosine = cosine_centroid_distance(ref, win)
    test = permutation_test(
        ref, win, options.permutations, options.seed, whiten=options.whiten_components, nearest=method != "mmd"
    )
    if ref_labels is not None and win_labels is not None and len(win_labels) and len(ref_labels):
        mix = label_mix_test(ref_labels, win_labels)
        mix_dict: dict[str, Any] = asdict(mix)
        label_drift = mix.p_value < alpha
    else:
        mix_dict, label_drift = {}, False
    far = farthest_texts(ref, win, texts, options.top_k, ids)
    cosine_drift = cosine > options.cosine_threshold
    test_drift = test.p_value < alpha
    return DriftReport(
        window=len(win),
        n_rows=len(win),
        n_reference=len(ref),
        method=method,
        drift=cosine_drift if method == "cosine" else test_drift,
        cosine_distance=cosine,
        cosine_threshold=options.cosine_threshold,
        cosine_drift=cosine_drift,
        p_value=test.p_value,
        alpha=alpha,
        test_drift=test_drift,
        mmd2=test.mmd2,
        mmd_p_value=test.mmd_p_value,
        nn_distance2=test.nn_distance2,
        nn_p_value=test.nn_p_value,
        bandwidth=test.bandwidth,
        whiten_components=test.components,
        permutations=test.permutations,
        label_mix=mix_dict,
        label_drift=label_drift,
        farthest=far,
        texts=TEXTS_HIDDEN if texts is None else TEXTS_SHOWN,
        seconds=time.perf_counter() - start,
    )
