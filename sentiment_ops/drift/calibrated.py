"""A drift test calibrated for one fixed reference (pure numpy).

Every served text is mapped into a whitening fitted on the version's reference alone (its
top principal components, each scaled to unit variance). The test asks whether the
window's mean in that space sits farther from the **calibration set's** mean than a window
of held-out texts would:

    T = ||window mean - calibration mean||²

Under no shift both means are averages of draws of the same distribution, so T is a
quadratic form of a nearly normal vector with covariance ``Σ (1/n + 1/N)`` (n window texts,
N calibration texts, Σ the texts' covariance in the whitened space, estimated on the
calibration set). Its p-value comes from the scaled chi-square with the same mean and
variance (Satterthwaite); the variance carries a fourth-moment term estimated on the
calibration set, since embeddings are heavier-tailed than normal and a window of 100 sees it.

Why this statistic: for one fixed calibration set, a test built on the *mean of one score*
(a distance to the reference, a kernel similarity) strays from alpha by about
``sqrt(n/N)`` standard errors, the calibration mean's own sampling error. T sums squared
errors over all whitened directions: the calibration set's error enters as a second-order
term, worth about ``n/N`` standard errors, so the false-alarm rate for the deployed
calibration set stays much closer to alpha at the same N (docs/drift.md, measured).

Three per-text scores are reported beside it (they do not decide): ``nn``, the distance to
the nearest reference text (a new cluster); ``kernel``, one minus the mean RBF similarity to
the reference texts; ``positive``, the predicted label's share (for a model of more than two
classes, the share of the class the calibration set predicts most: ``label_class``). Each is
a z-score of the window mean against the calibration scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sentiment_ops.drift.detectors import chi2_isf, chi2_sf
from sentiment_ops.drift.two_sample import as_2d, squared_distances
from sentiment_ops.labels import BINARY, LabelSet

SCORES = ("nn", "kernel", "positive")  # reported per-text scores: columns 0-2 of ``scores``
MIN_CALIBRATION = 30
P_FLOOR = 1e-12  # p-values below this are reported as this (the CUSUM's score is then 7.0)


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
        """(rows, 3 + k): nn distance, kernel dissimilarity, 1 when the predicted class is the
        ``tracked`` one (else 0; NaN when unknown), then the k whitened coordinates."""
        y = (as_2d(emb, "emb") - self.mean) @ self.projection
        out = np.empty((len(y), 3 + y.shape[1]))
        for start in range(0, len(y), 2048):  # bounds the distance block's memory
            d2 = squared_distances(y[start : start + 2048], self.ref)
            out[start : start + len(d2), 0] = np.sqrt(d2.min(axis=1))
            out[start : start + len(d2), 1] = 1.0 - np.exp(-d2 / (2 * self.bandwidth**2)).mean(axis=1)
        lab = np.asarray(labels, dtype=np.float64)
        out[:, 2] = np.where(lab >= 0, (lab == self.tracked).astype(np.float64), np.nan)
        out[:, 3:] = y
        return out


@dataclass
class CalibratedResult:
    """One window against the calibrated null. ``statistic``: the mean shift T as a
    z-score under the null (``z["shift"]``); ``p_value``: of T. The other ``z`` are the
    reported scores'."""

    z: dict[str, float]
    statistic: float
    p_value: float
    window_means: dict[str, float]
    calibration_means: dict[str, float]
    n: int
    calibration_n: int
    shift: float  # T itself


class CalibratedTest:
    """The null of a reference's window statistics, estimated from its calibration scores."""

    def __init__(self, scorer: ReferenceScorer, calibration_scores: np.ndarray) -> None:
        cal = np.asarray(calibration_scores, dtype=np.float64)
        if len(cal) < MIN_CALIBRATION:
            raise ValueError(f"a calibration set needs at least {MIN_CALIBRATION} texts, got {len(cal)}")
        self.scorer = scorer
        self.label_class: str | None = None  # the tracked class's name, when the caller knows it
        n = self.n_cal = len(cal)
        base = cal[:, :3]
        self.mu = np.array([np.nanmean(c) if np.any(~np.isnan(c)) else 0.0 for c in base.T])
        self.sd = np.array([np.nanstd(c, ddof=1) if np.count_nonzero(~np.isnan(c)) > 1 else 0.0 for c in base.T])
        self.sd[~(self.sd > 0)] = 1.0  # e.g. one predicted label only: that z is always 0
        coords = cal[:, 3:]
        self.centre = coords.mean(axis=0)
        dev = coords - self.centre
        cov = dev.T @ dev / (n - 1)
        self.trace = float(np.trace(cov))
        # tr(Σ²) unbiased under normality: tr(S²) alone overstates it by about tr(S)²/N
        sq = float(np.sum(cov * cov))
        self.trace_sq = max((n - 1) ** 2 / ((n - 2) * (n + 1)) * (sq - self.trace**2 / (n - 1)), sq / n)
        norms = np.sum(dev * dev, axis=1)
        self.excess = max(0.0, float(norms.var(ddof=1)) - 2 * self.trace_sq)  # heavier tails than normal

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

    def null(self, n: int) -> tuple[float, float, float, float]:
        """T's null for a window of ``n`` texts: its mean and variance, and the scale and
        degrees of freedom of the chi-square that has them (T / scale ~ chi-square)."""
        f = 1 / n + 1 / self.n_cal
        mean, var = self.trace * f, 2 * self.trace_sq * f * f + self.excess / n**3
        return mean, var, var / (2 * mean), 2 * mean * mean / var

    def offset_margin(self, n: int, sds: float = 2.0) -> float:
        """``sds`` standard deviations of the offset one calibration set leaves in a window's
        normal score, for windows of ``n``: about ``r / sqrt(1 + 2 r)`` with ``r = n / N``
        (the calibration mean's squared error is worth r standard errors of T and adds 2 r
        to its variance). The repeated mode sizes its threshold for this much offset."""
        r = n / self.n_cal
        return sds * r / math.sqrt(1 + 2 * r)

    def p_of(self, shift: float, n: int) -> float:
        """P(T ≥ shift) for a window of ``n``: the scaled chi-square of the null's mean and variance."""
        _, _, scale, dof = self.null(n)
        return max(P_FLOOR, chi2_sf(shift / scale, dof))

    def threshold(self, alpha: float, n: int) -> float:
        """The z-scored T at which a window of ``n`` texts alarms at level ``alpha``."""
        mean, var, scale, dof = self.null(n)
        return (scale * chi2_isf(alpha, dof) - mean) / math.sqrt(var)

    def test(self, emb: np.ndarray, labels: np.ndarray) -> CalibratedResult:
        return self.test_scores(self.scorer.scores(emb, labels))

    def test_scores(self, scores: np.ndarray) -> CalibratedResult:
        """``test`` of a window given its per-text scores (``scorer.scores``)."""
        n = len(scores)
        shift = float(np.sum((scores[:, 3:].mean(axis=0) - self.centre) ** 2))
        mean, var, _, _ = self.null(n)
        z = {"shift": (shift - mean) / math.sqrt(var)}
        means = {}
        for k, name in enumerate(SCORES):
            col = scores[:, k]
            col = col[~np.isnan(col)]
            means[name] = float(col.mean()) if len(col) else float("nan")
            z[name] = (
                float((means[name] - self.mu[k]) / (self.sd[k] * math.sqrt(1 / len(col) + 1 / self.n_cal)))
                if len(col)
                else 0.0
            )
        return CalibratedResult(
            z=z,
            statistic=z["shift"],
            p_value=self.p_of(shift, n),
            window_means=means,
            calibration_means={name: float(v) for name, v in zip(SCORES, self.mu, strict=True)},
            n=n,
            calibration_n=self.n_cal,
            shift=shift,
        )
