"""A drift test calibrated for one fixed reference (pure numpy).

Each served text gets three scores against the version's fixed reference, in a whitening
fitted on the reference alone:

* ``nn``: Euclidean distance to the nearest reference text (a new cluster, a share of new texts),
* ``kernel``: one minus the mean RBF similarity to the reference texts (the cross term of
  MMD², bandwidth by the median heuristic on the reference): a broad move of the window,
* ``positive``: the predicted label (the window's positive share: reported, not deciding);
  for a model of more than two classes, the share of the class the calibration set predicts
  most (``label_class`` in the report; the key stays ``positive``).

Under no shift the window texts are independent draws of the traffic the reference stands
for, so each window mean is close to normal around that score's mean for *this* reference.
That mean and the scores' covariance are estimated from a calibration set: held-out texts,
embedded as served, that neither the model nor the reference used. With ``N`` calibration
texts and ``n`` window texts the z-scores use the variance ``σ²(1/n + 1/N)``: the
calibration set's own sampling error is part of the null. The decision statistic is the
larger of ``z_nn`` and ``z_kernel`` (one-sided: farther from the reference); its p-value is
the chance of a larger maximum under the two z-scores' joint normal law (their correlation
from the calibration scores), computed by a seeded Monte Carlo. The positive share is left
out of the decision: a few points of label balance separate any two finite samples of
reviews (the calibration set's share differs from held-out traffic by 2.3 points in the
benchmark), and a window of 2,000 sees that; the label mix has its own reported test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from sentiment_ops.drift.two_sample import as_2d, squared_distances
from sentiment_ops.labels import BINARY, LabelSet

SCORES = ("nn", "kernel", "positive")
NULL_DRAWS = 200_000  # Monte Carlo draws of the max-z null: p-values resolved to ~1e-5
NULL_SEED = 0
MIN_CALIBRATION = 30


def _whitening(ref: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference's mean and a (dim x k) projection onto its top principal components,
    each scaled to unit variance (``components <= 0``: identity)."""
    mean = ref.mean(axis=0)
    if components <= 0:
        return mean, np.eye(ref.shape[1])
    centred = ref - mean
    var, vecs = np.linalg.eigh(centred.T @ centred / max(1, len(ref) - 1))
    var, vecs = var[::-1], vecs[:, ::-1]
    keep = min(components, int(np.count_nonzero(var > var[0] * 1e-10)) if var[0] > 0 else 0)
    if keep == 0:
        return mean, np.eye(ref.shape[1])
    return mean, vecs[:, :keep] / np.sqrt(var[:keep])


@dataclass
class ReferenceScorer:
    """Per-text scores against one fixed reference (see the module docstring)."""

    mean: np.ndarray
    projection: np.ndarray
    ref: np.ndarray  # the reference, whitened
    bandwidth: float
    tracked: int = 1  # the class whose share the third score is (binary: positive)

    @classmethod
    def fit(cls, ref: np.ndarray, components: int = 64) -> ReferenceScorer:
        x = as_2d(ref, "ref")
        mean, proj = _whitening(x, components)
        white = (x - mean) @ proj
        d2 = squared_distances(white, white)
        iu = np.triu_indices(len(white), k=1)
        med = float(np.sqrt(np.median(d2[iu]))) if len(white) > 1 else 1.0
        return cls(mean, proj, white, med if med > 0 else 1.0)

    def scores(self, emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(rows, 3): nn distance, kernel dissimilarity, 1 when the predicted class is the
        ``tracked`` one (else 0; NaN when unknown)."""
        y = (as_2d(emb, "emb") - self.mean) @ self.projection
        out = np.empty((len(y), 3))
        for start in range(0, len(y), 2048):  # bounds the distance block's memory
            d2 = squared_distances(y[start : start + 2048], self.ref)
            out[start : start + len(d2), 0] = np.sqrt(d2.min(axis=1))
            out[start : start + len(d2), 1] = 1.0 - np.exp(-d2 / (2 * self.bandwidth**2)).mean(axis=1)
        lab = np.asarray(labels, dtype=np.float64)
        out[:, 2] = np.where(lab >= 0, (lab == self.tracked).astype(np.float64), np.nan)
        return out


@dataclass
class CalibratedResult:
    """One window against the calibrated null. ``z``: per score; ``statistic``: the larger
    of ``z["nn"]`` and ``z["kernel"]``; ``p_value``: of that max under the joint null."""

    z: dict[str, float]
    statistic: float
    p_value: float
    window_means: dict[str, float]
    calibration_means: dict[str, float]
    n: int
    calibration_n: int


class CalibratedTest:
    """The null of a reference's window-mean scores, estimated from its calibration scores."""

    def __init__(self, scorer: ReferenceScorer, calibration_scores: np.ndarray) -> None:
        cal = np.asarray(calibration_scores, dtype=np.float64)
        if len(cal) < MIN_CALIBRATION:
            raise ValueError(f"a calibration set needs at least {MIN_CALIBRATION} texts, got {len(cal)}")
        self.scorer = scorer
        self.label_class: str | None = None  # the tracked class's name, when the caller knows it
        self.n_cal = len(cal)
        self.mu = cal.mean(axis=0)
        self.sd = cal.std(axis=0, ddof=1)
        self.constant = self.sd <= 0  # e.g. one predicted label only: that z is always 0
        self.sd[self.constant] = 1.0
        centred = (cal - self.mu) / self.sd
        self.corr = np.clip(centred.T @ centred / max(1, len(cal) - 1), -1.0, 1.0)
        np.fill_diagonal(self.corr, 1.0)
        self._null: np.ndarray | None = None

    @classmethod
    def fit(
        cls,
        ref: np.ndarray,
        cal_emb: np.ndarray,
        cal_labels: np.ndarray,
        components: int = 64,
        classes: LabelSet = BINARY,
    ) -> CalibratedTest:
        """The test of ``ref`` calibrated on ``cal_emb`` (predicted ``cal_labels`` of the
        model's ``classes``): the third score tracks ``positive`` for a binary model and the
        calibration set's most predicted class for more classes."""
        scorer = ReferenceScorer.fit(ref, components)
        if not classes.is_binary:
            known = np.asarray(cal_labels, dtype=np.int64)
            known = known[(known >= 0) & (known < classes.k)]
            scorer.tracked = int(np.bincount(known, minlength=classes.k).argmax()) if len(known) else 0
        test = cls(scorer, scorer.scores(cal_emb, cal_labels))
        test.label_class = classes.names[scorer.tracked]
        return test

    def z_scores(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-score z of a block of per-text scores (and the window means); a score with no
        values (labels unknown) gets z = 0."""
        means = np.full(3, np.nan)
        z = np.zeros(3)
        for k in range(3):
            col = scores[:, k]
            col = col[~np.isnan(col)]
            if len(col) == 0:
                continue
            means[k] = col.mean()
            z[k] = (means[k] - self.mu[k]) / (self.sd[k] * math.sqrt(1 / len(col) + 1 / self.n_cal))
        return z, means

    def p_value(self, statistic: float) -> float:
        """P(max of the null z-scores ≥ statistic), +1 corrected over the seeded draws."""
        null = self._null_max()
        return float((1 + np.count_nonzero(null >= statistic)) / (1 + len(null)))

    def _null_max(self) -> np.ndarray:
        """The max statistic of the seeded standard normal draws, correlated like the scores."""
        if self._null is None:
            chol = np.linalg.cholesky(self.corr + 1e-9 * np.eye(3))
            draws = _base_draws() @ chol.T
            draws[:, self.constant] = 0.0
            self._null = _max_statistic(draws)
        return self._null

    def test(self, emb: np.ndarray, labels: np.ndarray) -> CalibratedResult:
        return self.test_scores(self.scorer.scores(emb, labels))

    def test_scores(self, scores: np.ndarray) -> CalibratedResult:
        """``test`` of a window given its per-text scores (``scorer.scores``)."""
        z, means = self.z_scores(scores)
        stat = float(_max_statistic(z[None, :])[0])
        return CalibratedResult(
            z={name: float(v) for name, v in zip(SCORES, z, strict=True)},
            statistic=stat,
            p_value=self.p_value(stat),
            window_means={name: float(v) for name, v in zip(SCORES, means, strict=True)},
            calibration_means={name: float(v) for name, v in zip(SCORES, self.mu, strict=True)},
            n=len(scores),
            calibration_n=self.n_cal,
        )

    def threshold(self, alpha: float) -> float:
        """The statistic's critical value at level ``alpha`` (its null 1 - alpha quantile)."""
        null = self._null_max()
        return float(np.quantile(null, 1 - alpha))


@lru_cache(maxsize=1)
def _base_draws() -> np.ndarray:
    """Independent standard normal draws (seeded, made once per process)."""
    return np.random.default_rng(NULL_SEED).standard_normal((NULL_DRAWS, 3))


def _max_statistic(z: np.ndarray) -> np.ndarray:
    """The decision statistic: the larger of the nn and kernel z-scores (column 2, the
    positive share, is reported only)."""
    return np.asarray(np.maximum(z[:, 0], z[:, 1]))
