"""Drift detectors over pooled embeddings (pure numpy: no MLflow, no files).

Four signals compare a window of served predictions with a model version's reference:

1. ``cosine_centroid_distance``: the seed system's score, ``1 - cos(mean(ref), mean(win))``,
   compared with a fixed threshold (0.30). Kept for continuity; it is not calibrated: with
   no shift it shrinks like 1/window, and real shifts (another domain, a label shift) often
   stay far below 0.30.
2. ``mmd_permutation_test``: the unbiased MMD² with an RBF kernel (bandwidth: median
   heuristic on the pooled sample) and a permutation p-value with the +1 correction,
   ``p = (1 + #{perm ≥ observed}) / (1 + B)``. Its false-alarm rate is alpha at any window
   size, which is what decides the status by default.
3. ``label_mix_test``: the predicted positive share of the window against the reference's
   (two-proportion z-test), a label shift signal.
4. ``farthest_texts``: the window rows farthest from their nearest reference neighbour, so a
   person sees what changed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

PERMUTATION_BLOCK = 128  # permutations scored per matrix product (bounds memory)
MEDIAN_SAMPLE = 2000  # rows used for the median heuristic on very large samples


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {arr.shape}")
    return arr


def cosine_centroid_distance(ref: np.ndarray, win: np.ndarray) -> float:
    """The seed's drift score: cosine distance between the two mean embeddings."""
    a = _as_2d(ref, "ref").mean(axis=0)
    b = _as_2d(win, "win").mean(axis=0)
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    if denom == 0.0:
        return 0.0 if not a.any() and not b.any() else 1.0
    return float(1.0 - np.dot(a, b) / denom)


def squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances (clipped at 0 against rounding)."""
    xx = np.einsum("ij,ij->i", x, x)[:, None]
    yy = np.einsum("ij,ij->i", y, y)[None, :]
    d2 = xx + yy - 2.0 * (x @ y.T)
    np.maximum(d2, 0.0, out=d2)
    return d2


def median_bandwidth(pooled: np.ndarray, seed: int = 0, d2: np.ndarray | None = None) -> float:
    """Median heuristic: the median pairwise Euclidean distance of the pooled sample.

    Pass ``d2`` (the pooled squared-distance matrix) when it is already computed; very
    large samples are subsampled to ``MEDIAN_SAMPLE`` rows."""
    pooled = _as_2d(pooled, "pooled")
    n = pooled.shape[0]
    if d2 is None or n > MEDIAN_SAMPLE:
        if n > MEDIAN_SAMPLE:
            idx = np.random.default_rng(seed).choice(n, MEDIAN_SAMPLE, replace=False)
            pooled = pooled[idx]
            n = MEDIAN_SAMPLE
        d2 = squared_distances(pooled, pooled)
    iu = np.triu_indices(n, k=1)
    med = float(np.sqrt(np.median(d2[iu]))) if n > 1 else 0.0
    return med if med > 0 else 1.0  # identical points: any bandwidth gives MMD² = 0


def rbf_kernel(d2: np.ndarray, bandwidth: float) -> np.ndarray:
    """``exp(-d² / (2 σ²))`` from squared distances."""
    return np.exp(-d2 / (2.0 * bandwidth * bandwidth))


def _mmd2_from_sums(sxx: Any, syy: Any, sxy: Any, n: int, m: int) -> Any:
    """Unbiased MMD² from kernel block sums that include the diagonals (k(x, x) = 1)."""
    return (sxx - n) / (n * (n - 1)) + (syy - m) / (m * (m - 1)) - 2.0 * sxy / (n * m)


def mmd2_rbf(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None) -> float:
    """Unbiased MMD² (the U-statistic, which can be slightly negative under no shift) with
    an RBF kernel; ``bandwidth=None`` uses the median heuristic on the pooled sample."""
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("MMD² needs at least 2 rows in each sample")
    if bandwidth is None:
        bandwidth = median_bandwidth(np.vstack([x, y]))
    sxx = rbf_kernel(squared_distances(x, x), bandwidth).sum()
    syy = rbf_kernel(squared_distances(y, y), bandwidth).sum()
    sxy = rbf_kernel(squared_distances(x, y), bandwidth).sum()
    return float(_mmd2_from_sums(sxx, syy, sxy, n, m))


@dataclass
class MMDResult:
    mmd2: float
    p_value: float
    bandwidth: float
    permutations: int


def mmd_permutation_test(
    ref: np.ndarray, win: np.ndarray, permutations: int = 500, seed: int = 0, bandwidth: float | None = None
) -> MMDResult:
    """Two-sample MMD² permutation test.

    The pooled kernel matrix is computed once; each permutation is an assignment of the
    pooled rows to the two groups, scored for a block of permutations at once as
    ``diag(Aᵀ K A)`` with ``A`` the (rows x permutations) group indicators. The p-value
    carries the +1 correction (the observed split counts as one permutation), so it is
    never 0 and the test is exact at level alpha."""
    x, y = _as_2d(ref, "ref"), _as_2d(win, "win")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimension mismatch: reference {x.shape[1]}, window {y.shape[1]}")
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("the MMD test needs at least 2 rows in each sample")
    if permutations < 1:
        raise ValueError("permutations must be at least 1")
    pooled = np.vstack([x, y])
    d2 = squared_distances(pooled, pooled)
    if bandwidth is None:
        bandwidth = median_bandwidth(pooled, seed=seed, d2=d2)
    k = rbf_kernel(d2, bandwidth)
    del d2
    total = k.sum()
    rows = k.sum(axis=1)  # K·1: gives a_ᵀK1 without a second product

    def score(a: np.ndarray) -> np.ndarray:  # a: (N, B) indicators of the reference group
        ka = k @ a
        sxx = np.einsum("ij,ij->j", a, ka)
        sx1 = rows @ a
        sxy = sx1 - sxx
        syy = total - 2.0 * sx1 + sxx
        return np.asarray(_mmd2_from_sums(sxx, syy, sxy, n, m))

    observed_a = np.zeros((n + m, 1))
    observed_a[:n] = 1.0
    observed = float(score(observed_a)[0])

    rng = np.random.default_rng(seed)
    exceed = 0
    done = 0
    # Guard against float noise making an exact tie (e.g. the identity permutation) count
    # as smaller than the observed value.
    tol = 1e-12 * max(1.0, abs(observed))
    while done < permutations:
        b = min(PERMUTATION_BLOCK, permutations - done)
        order = np.argsort(rng.random((b, n + m)), axis=1)[:, :n]
        a = np.zeros((n + m, b))
        a[order, np.arange(b)[:, None]] = 1.0
        exceed += int(np.count_nonzero(score(a) >= observed - tol))
        done += b
    p = (1 + exceed) / (1 + permutations)
    return MMDResult(mmd2=observed, p_value=float(p), bandwidth=float(bandwidth), permutations=permutations)


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
    x, y = _as_2d(ref, "ref"), _as_2d(win, "win")
    return np.sqrt(squared_distances(y, x).min(axis=1))


def farthest_texts(
    ref: np.ndarray, win: np.ndarray, texts: Sequence[str], k: int = 5, ids: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The ``k`` window rows farthest from the reference, farthest first."""
    if k <= 0:
        return []
    if len(texts) != len(win):
        raise ValueError(f"{len(texts)} texts for {len(win)} window rows")
    dist = nearest_reference_distance(ref, win)
    order = np.argsort(-dist, kind="stable")[:k]
    return [
        {
            "index": int(i),
            "id": None if ids is None else ids[i],
            "distance": float(dist[i]),
            "text": texts[i],
        }
        for i in order
    ]


@dataclass
class DriftReport:
    """Everything one drift check found. ``drift`` is the decision (by ``method``)."""

    window: int  # rows asked for
    n_rows: int  # rows used
    n_reference: int
    method: str  # "mmd" (calibrated, default) or "cosine" (the seed's fixed threshold)
    drift: bool
    # the seed's score
    cosine_distance: float
    cosine_threshold: float
    cosine_drift: bool
    # the calibrated test
    mmd2: float
    p_value: float
    alpha: float
    permutations: int
    bandwidth: float
    mmd_drift: bool
    # label shift
    label_mix: dict[str, Any]
    label_drift: bool
    farthest: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    model_name: str | None = None
    model_version: int | None = None
    alias: str | None = None
    created_at: str | None = None
    reference: dict[str, Any] = field(default_factory=dict)
    check_id: int | None = None  # id of the check in the inference store, once recorded
    monitoring_run_id: str | None = None  # MLflow run holding the check's metrics

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect(
    ref: np.ndarray,
    win: np.ndarray,
    *,
    ref_labels: np.ndarray | None = None,
    win_labels: np.ndarray | None = None,
    texts: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    alpha: float = 0.01,
    permutations: int = 500,
    cosine_threshold: float = 0.30,
    method: str = "mmd",
    top_k: int = 5,
    seed: int = 0,
) -> DriftReport:
    """Run every detector on one window and decide."""
    if method not in ("mmd", "cosine"):
        raise ValueError(f"unknown drift method {method!r} (mmd | cosine)")
    start = time.perf_counter()
    cosine = cosine_centroid_distance(ref, win)
    mmd = mmd_permutation_test(ref, win, permutations=permutations, seed=seed)
    if ref_labels is not None and win_labels is not None and len(win_labels) and len(ref_labels):
        mix = label_mix_test(ref_labels, win_labels)
        mix_dict: dict[str, Any] = asdict(mix)
        label_drift = mix.p_value < alpha
    else:
        mix_dict, label_drift = {}, False
    far = farthest_texts(ref, win, texts, top_k, ids) if texts is not None else []
    cosine_drift = cosine > cosine_threshold
    mmd_drift = mmd.p_value < alpha
    return DriftReport(
        window=len(win),
        n_rows=len(win),
        n_reference=len(ref),
        method=method,
        drift=mmd_drift if method == "mmd" else cosine_drift,
        cosine_distance=cosine,
        cosine_threshold=cosine_threshold,
        cosine_drift=cosine_drift,
        mmd2=mmd.mmd2,
        p_value=mmd.p_value,
        alpha=alpha,
        permutations=mmd.permutations,
        bandwidth=mmd.bandwidth,
        mmd_drift=mmd_drift,
        label_mix=mix_dict,
        label_drift=label_drift,
        farthest=far,
        seconds=time.perf_counter() - start,
    )
