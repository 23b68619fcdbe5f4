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


def test_label_share_is_reported_not_deciding() -> None:
    rng = np.random.default_rng(9)
    ref, _ = _draw(rng, 300)
    test = CalibratedTest.fit(ref, *_draw(rng, 20_000), components=8)
    x, labels = _draw(rng, 400)
    neg = labels == 0
    skewed = np.concatenate([np.flatnonzero(neg), np.flatnonzero(~neg)[: int((~neg).sum() * 0.2)]])
    res = test.test(x[skewed], labels[skewed])
    assert res.z["positive"] < -5 and res.statistic == max(res.z["nn"], res.z["kernel"])


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


def test_durations() -> None:
    assert monitor.expected_checks("30d", "1h") == 720
    assert monitor.expected_checks("1w", "30m") == 336
    with pytest.raises(ValueError):
        monitor.expected_checks("1h", "1h")
