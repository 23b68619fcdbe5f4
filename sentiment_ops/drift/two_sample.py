"""Two-sample permutation tests on embeddings (pure numpy).

The statistics behind ``sentops drift``: unbiased MMD² with an RBF kernel (bandwidth by the
median heuristic on the pooled sample) and the mean squared distance of the window rows to
their nearest reference row, on the pooled sample optionally PCA-whitened; permutation
p-values with the +1 correction, ``p = (1 + #{perm ≥ observed}) / (1 + B)``, and their
min-p aggregate calibrated over the same permutations. See docs/drift.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

PERMUTATION_BLOCK = 128  # permutations scored per matrix product (bounds memory)
MEDIAN_SAMPLE = 2000  # rows used for the median heuristic on very large samples


def as_2d(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {arr.shape}")
    return arr


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
    pooled = as_2d(pooled, "pooled")
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
    x, y = as_2d(x, "x"), as_2d(y, "y")
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("MMD² needs at least 2 rows in each sample")
    if bandwidth is None:
        bandwidth = median_bandwidth(np.vstack([x, y]))
    sxx = rbf_kernel(squared_distances(x, x), bandwidth).sum()
    syy = rbf_kernel(squared_distances(y, y), bandwidth).sum()
    sxy = rbf_kernel(squared_distances(x, y), bandwidth).sum()
    return float(_mmd2_from_sums(sxx, syy, sxy, n, m))


def whiten_pooled(pooled: np.ndarray, components: int) -> np.ndarray:
    """Project the pooled sample on its top principal components, each scaled to unit
    variance (PCA whitening); ``components <= 0`` returns the sample unchanged.

    Fine-tuned classifier embeddings put most of their variance on one direction (the
    sentiment axis: 88% for the default model), so raw Euclidean distances see little
    else; whitening gives a new domain's directions equal weight. The map is fitted on the
    pooled sample (a symmetric function of it), so the permutation test stays exact."""
    if components <= 0:
        return pooled
    centred = pooled - pooled.mean(axis=0)
    # eigen-decomposition of the (dim x dim) covariance: cheaper than an SVD of the sample
    var, vecs = np.linalg.eigh(centred.T @ centred / max(1, len(pooled) - 1))
    var, vecs = var[::-1], vecs[:, ::-1]
    usable = int(np.count_nonzero(var > var[0] * 1e-10)) if var.size and var[0] > 0 else 0
    keep = min(components, usable)
    if keep == 0:
        return centred
    return np.asarray((centred @ vecs[:, :keep]) / np.sqrt(var[:keep]))


class _MMDScorer:
    """Unbiased MMD² of group assignments over a fixed pooled kernel matrix."""

    def __init__(self, d2: np.ndarray, bandwidth: float, n: int) -> None:
        self.k = rbf_kernel(d2, bandwidth)
        self.total = self.k.sum()
        self.rows = self.k.sum(axis=1)  # K·1: gives aᵀK1 without a second product
        self.n, self.m = n, len(d2) - n

    def __call__(self, a: np.ndarray) -> np.ndarray:  # a: (N, B) indicators of the reference group
        ka = self.k @ a
        sxx = np.einsum("ij,ij->j", a, ka)
        sx1 = self.rows @ a
        return np.asarray(_mmd2_from_sums(sxx, self.total - 2.0 * sx1 + sxx, sx1 - sxx, self.n, self.m))


class _NearestReferenceScorer:
    """Mean squared distance from each window row to its nearest reference row.

    Sensitive to a small share of new texts (a new cluster) that MMD² with one bandwidth
    dilutes; squaring weights the far rows (side experiment: a 5% share of tweets in a window
    of 500 found in 20/20 windows with the square, 16/20 without). Each row's nearest pooled
    neighbours are sorted once; under a permutation the nearest reference row is the first
    of them assigned to the reference group."""

    def __init__(self, d2: np.ndarray, n: int) -> None:
        big_n = len(d2)
        dist = d2.copy()  # squared distances: the statistic averages them
        np.fill_diagonal(dist, np.inf)
        # enough neighbours that one of them is in the reference group with prob. 1 - 1e-9
        share = n / big_n
        k = big_n - 1 if share >= 1 else int(min(big_n - 1, math.ceil(math.log(1e-9) / math.log(1 - share))))
        part = np.argpartition(dist, k - 1, axis=1)[:, :k] if k < big_n - 1 else np.argsort(dist, axis=1)[:, :k]
        near = np.take_along_axis(dist, part, axis=1)
        order = np.argsort(near, axis=1)
        self.neighbours = np.take_along_axis(part, order, axis=1)
        self.near = np.take_along_axis(near, order, axis=1)
        self.dist = dist
        self.n, self.m = n, big_n - n
        self.block = max(1, 30_000_000 // max(1, big_n * k))

    def __call__(self, a: np.ndarray) -> np.ndarray:
        out = np.empty(a.shape[1])
        for start in range(0, a.shape[1], self.block):
            memb = a[:, start : start + self.block].T > 0.5  # (b, N): in the reference group
            in_ref = memb[:, self.neighbours]  # (b, N, k)
            first = in_ref.argmax(axis=2)
            nearest = np.take_along_axis(self.near[None, :, :], first[:, :, None], axis=2)[:, :, 0]
            missed = ~np.take_along_axis(in_ref, first[:, :, None], axis=2)[:, :, 0] & ~memb
            for b, i in zip(*np.nonzero(missed), strict=True):  # rare: exact fallback
                nearest[b, i] = self.dist[i, memb[b]].min()
            out[start : start + len(memb)] = np.where(memb, 0.0, nearest).sum(axis=1) / self.m
        return out


@dataclass
class PermutationResult:
    """One permutation test of reference vs window; ``p_value`` is the min-p aggregate of
    the statistics computed, calibrated over the same permutations."""

    mmd2: float
    mmd_p_value: float
    nn_distance2: float | None  # mean squared nearest-reference distance of the window rows
    nn_p_value: float | None
    p_value: float
    bandwidth: float
    permutations: int
    components: int  # whitening components used (0 = raw embeddings)


def _p_values(observed: float, perms: np.ndarray, tol: float) -> float:
    return (1 + int(np.count_nonzero(perms >= observed - tol))) / (1 + len(perms))


def _min_p(all_stats: np.ndarray) -> float:
    """Min-p aggregation: each statistic's p-value for every permutation (column 0 = the
    observed split), then the share of permutations whose smallest p is at least as small
    as the observed one (+1 correction included: column 0 counts itself)."""
    total = all_stats.shape[1]
    per_stat = np.empty_like(all_stats)
    for s, row in enumerate(all_stats):
        tol = 1e-12 * max(1.0, float(np.abs(row).max()))
        ranked = np.sort(row)
        per_stat[s] = (total - np.searchsorted(ranked, row - tol, side="left")) / total
    smallest = per_stat.min(axis=0)
    return float(np.count_nonzero(smallest <= smallest[0] * (1 + 1e-12)) / total)


def _permuted_statistics(scorers: list[Any], n: int, m: int, permutations: int, seed: int) -> np.ndarray:
    """Each scorer's statistic on the observed split (column 0), then on ``permutations``
    random splits of the ``n + m`` pooled rows, scored a block of permutations at a time."""
    observed_a = np.zeros((n + m, 1))
    observed_a[:n] = 1.0
    stats = [[float(f(observed_a)[0])] for f in scorers]
    rng = np.random.default_rng(seed)
    done = 0
    while done < permutations:
        b = min(PERMUTATION_BLOCK, permutations - done)
        order = np.argsort(rng.random((b, n + m)), axis=1)[:, :n]
        a = np.zeros((n + m, b))
        a[order, np.arange(b)[:, None]] = 1.0
        for row, f in zip(stats, scorers, strict=True):
            row.extend(f(a).tolist())
        done += b
    return np.asarray(stats)  # (statistics, 1 + permutations)


def permutation_test(
    ref: np.ndarray,
    win: np.ndarray,
    permutations: int = 500,
    seed: int = 0,
    *,
    bandwidth: float | None = None,
    whiten: int = 0,
    nearest: bool = True,
) -> PermutationResult:
    """Two-sample permutation test of MMD² (RBF kernel, median-heuristic bandwidth) and,
    with ``nearest``, the mean squared nearest-reference distance of the window rows, both
    on the pooled sample whitened to ``whiten`` principal components (0 = raw).

    The pooled distance matrix is computed once; each permutation is an assignment of the
    pooled rows to the two groups, scored for a block of permutations at once (MMD² as
    ``diag(AᵀKA)`` with ``A`` the rows x permutations group indicators). Every p-value
    carries the +1 correction (the observed split counts as one permutation): never 0,
    and exact at level alpha under no shift."""
    x, y = as_2d(ref, "ref"), as_2d(win, "win")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimension mismatch: reference {x.shape[1]}, window {y.shape[1]}")
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("the permutation test needs at least 2 rows in each sample")
    if permutations < 1:
        raise ValueError("permutations must be at least 1")
    pooled = whiten_pooled(np.vstack([x, y]), whiten)
    d2 = squared_distances(pooled, pooled)
    if bandwidth is None:
        bandwidth = median_bandwidth(pooled, seed=seed, d2=d2)
    scorers: list[Any] = [_MMDScorer(d2, bandwidth, n)]
    if nearest:
        scorers.append(_NearestReferenceScorer(d2, n))
    del d2

    table = _permuted_statistics(scorers, n, m, permutations, seed)
    # float noise must not turn an exact tie (e.g. the identity permutation) into "smaller"
    ps = [_p_values(row[0], row[1:], 1e-12 * max(1.0, abs(row[0]))) for row in table]
    return PermutationResult(
        mmd2=float(table[0, 0]),
        mmd_p_value=ps[0],
        nn_distance2=float(table[1, 0]) if nearest else None,
        nn_p_value=ps[1] if nearest else None,
        p_value=_min_p(table) if nearest else ps[0],
        bandwidth=float(bandwidth),
        permutations=permutations,
        components=int(pooled.shape[1]) if whiten > 0 else 0,
    )


@dataclass
class MMDResult:
    mmd2: float
    p_value: float
    bandwidth: float
    permutations: int


def mmd_permutation_test(
    ref: np.ndarray, win: np.ndarray, permutations: int = 500, seed: int = 0, bandwidth: float | None = None
) -> MMDResult:
    """The plain MMD² permutation test on the raw embeddings (RBF kernel, median-heuristic
    bandwidth on the pooled sample, +1 correction)."""
    r = permutation_test(ref, win, permutations, seed, bandwidth=bandwidth, whiten=0, nearest=False)
    return MMDResult(mmd2=r.mmd2, p_value=r.mmd_p_value, bandwidth=r.bandwidth, permutations=permutations)
