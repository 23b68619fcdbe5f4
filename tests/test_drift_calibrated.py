"""The drift test calibrated for a fixed reference, and the repeated mode's CUSUM, on
synthetic embeddings whose null is known (fast, numpy only)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sentiment_ops.drift import monitor
from sentiment_ops.drift.calibrated import CalibratedTest

DIM = 12


def _draw(rng: np.random.Generator, n: int, shifted: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of a two-cluster 'sentiment' space (one dominant axis, as the model's);
    ``shifted`` rows come from a new domain off that plane."""
    labels = rng.integers(0, 2, n)
    x = rng.standard_normal((n, DIM))
    x[:, 0] = 4.0 * (labels * 2 - 1) + x[:, 0]
    if shifted:
        x[:shifted, 3:6] += 5.0
    return x, labels


def _binomial_bounds(rate: float, trials: int, z: float = 3.29) -> tuple[float, float]:
    """A 99.9% normal-approximation interval of a binomial rate (loose enough for CI noise)."""
    half = z * math.sqrt(rate * (1 - rate) / trials)
    return rate - half, rate + half


def test_false_alarm_rate_for_one_fixed_reference_is_alpha() -> None:
    """One fixed reference, a calibration set much larger than the window: the false-alarm
    rate over many unshifted windows is alpha, and shifted windows are found."""
    rng = np.random.default_rng(3)
    ref, _ = _draw(rng, 300)
    test = CalibratedTest.fit(ref, *_draw(rng, 40_000), components=8)
    p = np.array([test.test(*_draw(rng, 100)).p_value for _ in range(1500)])
    for alpha in (0.05, 0.01):
        lo, hi = _binomial_bounds(alpha, len(p))
        assert lo <= float(np.mean(p < alpha)) <= hi, (alpha, float(np.mean(p < alpha)))
    found = [test.test(*_draw(rng, 100, shifted=10)).p_value < 0.01 for _ in range(50)]
    assert np.mean(found) > 0.9


def test_a_small_calibration_set_is_part_of_the_null() -> None:
    """With as many calibration texts as window texts, the calibration set's own sampling
    error is half the null's variance: over calibration draws the false-alarm rate stays at
    alpha (the 1/N term), where ignoring it would double it or more."""
    rng = np.random.default_rng(5)
    ref, _ = _draw(rng, 200)
    hits = []
    for _ in range(400):
        test = CalibratedTest.fit(ref, *_draw(rng, 200), components=8)
        hits.append(test.test(*_draw(rng, 200)).p_value < 0.05)
    lo, hi = _binomial_bounds(0.05, len(hits))
    assert lo <= float(np.mean(hits)) <= hi


def test_a_label_shift_moves_the_mean_and_is_found() -> None:
    """80% negative texts move the window's mean along the sentiment axis: the mean-shift
    statistic decides (its z is the statistic) and the positive share is reported beside it."""
    rng = np.random.default_rng(9)
    ref, _ = _draw(rng, 300)
    test = CalibratedTest.fit(ref, *_draw(rng, 20_000), components=8)
    x, labels = _draw(rng, 400)
    neg = labels == 0
    skewed = np.concatenate([np.flatnonzero(neg), np.flatnonzero(~neg)[: int((~neg).sum() * 0.2)]])
    res = test.test(x[skewed], labels[skewed])
    assert res.z["positive"] < -5 and res.statistic == res.z["shift"] and res.p_value < 1e-6
    assert res.statistic > test.threshold(0.01, len(skewed))


def test_one_calibration_set_keeps_its_rate_near_alpha() -> None:
    """The deployed case: one fixed reference and calibration set (N = 32 windows' worth),
    many windows of unshifted traffic. Over twelve such deployments each one's false-alarm
    rate at 0.05 stays at alpha up to the windows' own binomial noise (0.005): the statistic
    sums squared errors over all directions, so one calibration set's error is second order
    (about n/N standard errors). A test on the mean of one score strays by sqrt(n/N) = 0.18
    standard errors: its per-deployment rates spread about three times as far."""
    rng = np.random.default_rng(11)
    rates = []
    for _ in range(12):
        ref, _ = _draw(rng, 300)
        test = CalibratedTest.fit(ref, *_draw(rng, 3200), components=DIM)
        traffic = test.scorer.scores(*_draw(rng, 50_000))  # windows then only average rows
        p = [test.test_scores(traffic[rng.choice(len(traffic), 100, replace=False)]).p_value for _ in range(2000)]
        rates.append(float(np.mean(np.array(p) < 0.05)))
    assert abs(float(np.mean(rates)) - 0.05) < 0.005, rates
    assert float(np.std(rates, ddof=1)) < 0.009, rates


def _chi2_sf_whole(x: float, dof: int) -> float:
    """The chi-square tail for a whole number of degrees, in closed form (the oracle)."""
    half = x / 2.0
    if dof % 2 == 0:  # exp(-x/2) * sum_{i<dof/2} (x/2)^i / i!
        return math.exp(-half) * sum(half**i / math.factorial(i) for i in range(dof // 2))
    # odd: erfc(sqrt(x/2)) + exp(-x/2) * sum_{i=1}^{(dof-1)/2} (x/2)^(i-1/2) / Gamma(i+1/2)
    return math.erfc(math.sqrt(half)) + math.exp(-half) * sum(
        half ** (i - 0.5) / math.gamma(i + 0.5) for i in range(1, (dof + 1) // 2)
    )


def test_chi2_tail_matches_the_closed_form_and_inverts() -> None:
    from sentiment_ops.drift.detectors import chi2_isf, chi2_sf

    for dof in (1, 2, 7, 64):
        for x in (0.3, dof, 3.0 * dof + 20):
            assert chi2_sf(x, dof) == pytest.approx(_chi2_sf_whole(x, dof), rel=1e-9, abs=1e-15)
    assert chi2_sf(chi2_isf(0.01, 37.5), 37.5) == pytest.approx(0.01, rel=1e-9)


def test_cusum_threshold_gives_the_run_length_asked_for() -> None:
    h = monitor.cusum_threshold(720.0)
    assert monitor.cusum_arl(h) == pytest.approx(720.0, rel=1e-6)
    rng = np.random.default_rng(0)
    lengths = []
    for _ in range(400):
        s, t = 0.0, 0
        while s < h:
            t += 1
            s = max(0.0, s + rng.standard_normal() - monitor.CUSUM_K)
        lengths.append(t)
    assert 720 * 0.85 < np.mean(lengths) < 720 * 1.15  # ±~4 standard errors of the mean


def test_monitor_steps_alarm_and_restart() -> None:
    state = monitor.step(None, 720.0, 0.5, 100)
    assert state.statistic == 0.0 and state.checks_since_alarm == 1 and not state.alarm
    state = monitor.step(state, 720.0, None, 0)  # no new texts: the statistic stays
    assert state.increment is None and state.checks_since_alarm == 2
    state = monitor.step(state, 720.0, 1e-4, 100)  # u = 3.72: S = 2.72 > h = 2.51
    assert state.alarm and state.checks_since_alarm == 0
    after = monitor.step(monitor.MonitorState.from_dict(state.to_dict()), 720.0, 0.5, 100)
    assert after.statistic == 0.0 and after.checks_since_alarm == 1 and not after.alarm


def test_margin_keeps_the_run_length_when_every_score_is_offset() -> None:
    """A deployed calibration set leaves the same small offset in every check's score, and
    the CUSUM sums it: with the margin the run length holds for scores N(margin, 1), where
    the plain threshold's falls short."""
    expected, margin = 100.0, 0.2
    plain = monitor.step(None, expected, 0.5, 100)
    held = monitor.step(None, expected, 0.5, 100, margin)
    assert held.threshold > plain.threshold and held.margin == margin

    def mean_run_length(h: float, rng: np.random.Generator) -> float:
        lengths = []
        for _ in range(600):
            s, t = 0.0, 0
            while s < h:
                t += 1
                s = max(0.0, s + rng.standard_normal() + margin - monitor.CUSUM_K)
            lengths.append(t)
        return float(np.mean(lengths))

    rng = np.random.default_rng(4)
    assert 100 * 0.85 < mean_run_length(held.threshold, rng) < 100 * 1.15
    assert mean_run_length(plain.threshold, rng) < 100 * 0.8


def test_durations() -> None:
    assert monitor.expected_checks("30d", "1h") == 720
    assert monitor.expected_checks("1w", "30m") == 336
    with pytest.raises(ValueError):
        monitor.expected_checks("1h", "1h")
