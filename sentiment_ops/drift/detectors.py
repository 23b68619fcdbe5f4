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
3. ``label_mix_test``: the window's predicted class shares against the reference's, a label
   shift signal: the two-proportion z-test of the positive share for a binary model, a
   chi-square test of the class counts for more classes (both reported).
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
from sentiment_ops.errors import DataError
from sentiment_ops.labels import BINARY, LabelSet


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
    """The window's predicted classes against the reference's. ``p_value`` decides
    ``label_drift``: the two-proportion z-test of the positive share for a binary model, the
    chi-square test for more classes. ``reference_positive`` / ``window_positive``: the
    predicted positive share (None for classes without ``positive``)."""

    reference_positive: float | None
    window_positive: float | None
    p_value: float
    reference_n: int
    window_n: int
    classes: list[str] = field(default_factory=list)  # names in index order
    reference_shares: dict[str, float] = field(default_factory=dict)  # predicted share per class
    window_shares: dict[str, float] = field(default_factory=dict)
    # chi-square test of homogeneity of the two samples' class counts (k-1 dof, classes
    # neither sample predicted left out); for two classes its p-value is the z-test's
    chi2: float = 0.0
    chi2_dof: int = 0
    chi2_p_value: float = 1.0


def label_mix_test(ref_labels: np.ndarray, win_labels: np.ndarray, classes: LabelSet = BINARY) -> LabelMix:
    """Compare the window's predicted class shares with the reference's (see ``LabelMix``)."""
    r = np.asarray(ref_labels).astype(np.int64)
    w = np.asarray(win_labels).astype(np.int64)
    n1, n2 = len(r), len(w)
    if n1 == 0 or n2 == 0:
        raise ValueError("label mix needs labels on both sides")
    k = max(classes.k, int(r.max()) + 1, int(w.max()) + 1)
    names = [*classes.names, *(str(i) for i in range(classes.k, k))]
    rc, wc = np.bincount(r, minlength=k), np.bincount(w, minlength=k)
    chi2, dof, chi2_p = chi_square_homogeneity(rc, wc)
    pos = names.index("positive") if "positive" in names else None
    p1 = None if pos is None else float(rc[pos] / n1)
    p2 = None if pos is None else float(wc[pos] / n2)
    p_value = two_proportion_p(p1, p2, n1, n2) if classes.is_binary and p1 is not None and p2 is not None else chi2_p
    return LabelMix(
        p1,
        p2,
        float(p_value),
        n1,
        n2,
        classes=names,
        reference_shares={n: float(c / n1) for n, c in zip(names, rc, strict=True)},
        window_shares={n: float(c / n2) for n, c in zip(names, wc, strict=True)},
        chi2=chi2,
        chi2_dof=dof,
        chi2_p_value=chi2_p,
    )


def two_proportion_p(p1: float, p2: float, n1: int, n2: int) -> float:
    """Two-sided p-value of the two-proportion z-test (pooled standard error)."""
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0.0:
        return 1.0 if p1 == p2 else 0.0
    return math.erfc(abs(p1 - p2) / se / math.sqrt(2.0))


def chi_square_homogeneity(a: np.ndarray, b: np.ndarray) -> tuple[float, int, float]:
    """Pearson's chi-square test that two samples' class counts ``a`` and ``b`` come from one
    distribution: (statistic, degrees of freedom, p-value). Classes with no count in either
    sample are left out; one class left: (0, 0, 1)."""
    table = np.vstack([a, b]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    dof = table.shape[1] - 1
    if dof < 1:
        return 0.0, 0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    return stat, dof, chi2_sf(stat, dof)


def chi2_sf(x: float, dof: float) -> float:
    """P(X ≥ x) for X chi-square with ``dof`` (any positive real) degrees of freedom: the
    regularized upper incomplete gamma Q(dof/2, x/2)."""
    if x <= 0:
        return 1.0
    a, t = dof / 2.0, x / 2.0
    log_front = a * math.log(t) - t - math.lgamma(a)
    if t < a + 1:  # series for P(a, t)
        term = total = 1.0 / a
        k = a
        for _ in range(10_000):
            k += 1
            term *= t / k
            total += term
            if term < total * 1e-15:
                break
        return float(min(1.0, max(0.0, 1.0 - math.exp(log_front) * total)))
    # continued fraction for Q(a, t) (modified Lentz)
    tiny = 1e-300
    b = t + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        step = d * c
        h *= step
        if abs(step - 1) < 1e-15:
            break
    return float(min(1.0, math.exp(log_front) * h))


def chi2_isf(p: float, dof: float) -> float:
    """The x with ``chi2_sf(x, dof) = p`` (bisection on the monotone survival function)."""
    lo, hi = 0.0, max(1.0, dof)
    while chi2_sf(hi, dof) > p:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if chi2_sf(mid, dof) > p else (lo, mid)
    return (lo + hi) / 2


def reference_classes(label_mix: dict[str, Any]) -> LabelSet:
    """The classes of a reference: the names of its ``label_mix``, in index order (a
    reference of a binary model names negative and positive)."""
    try:
        return LabelSet(tuple(str(n) for n in label_mix)) if label_mix else BINARY
    except DataError:
        return BINARY


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
    classes: LabelSet = BINARY,
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
        mix = label_mix_test(ref_labels, win_labels, classes)
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
