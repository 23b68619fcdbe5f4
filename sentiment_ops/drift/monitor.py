"""Repeated drift checks with a bounded false-alarm rate over time (pure numpy).

Each check turns the calibrated p-value of the texts served since the previous check into a
normal score ``u = Φ⁻¹(1 - p)`` (standard normal with no shift; disjoint texts make
successive scores independent) and runs a one-sided CUSUM on it::

    S_t = max(0, S_{t-1} + u_t - k),   alarm when S_t ≥ h, then S restarts at 0.

``k`` = 1 tolerates a small calibration error in every score without creeping up; ``h`` is
set so the expected number of checks between false alarms (the in-control average run
length, computed exactly by the Brook and Evans Markov chain) equals
``drift.false_alarm_every / drift.check_every`` even when every score is offset by
``margin``: N(margin, 1) scores, the error one deployed calibration set can leave
(``CalibratedTest.offset_margin``; the CUSUM sums it over checks). A shift that moves ``u`` by ``δ > k`` is
flagged after about ``(h + 1.17) / (δ - k)`` checks; a large one at the first check.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import numpy as np

from sentiment_ops.config import parse_duration

CUSUM_K = 1.0
# The largest calibration offset h allows for: beyond it the CUSUM would need k - margin
# below the textbook 0.5, and a threshold that large would hide real shifts.
MAX_MARGIN = 0.5
_STATES = 300  # Markov-chain states on [0, h): ARL within ~0.5% of simulation
_NORMAL = NormalDist()


def normal_score(p_value: float) -> float:
    """``Φ⁻¹(1 - p)``: standard normal under no shift, large when p is small."""
    p = min(max(p_value, 1e-12), 1 - 1e-12)
    return _NORMAL.inv_cdf(1 - p)


def cusum_arl(h: float, k: float = CUSUM_K, states: int = _STATES) -> float:
    """Expected checks to the first alarm of the CUSUM on N(0, 1) scores, starting at 0
    (Brook & Evans: a Markov chain on ``states`` cells of [0, h))."""
    w = h / states
    mids = (np.arange(states) + 0.5) * w
    edges = np.arange(states + 1) * w
    cdf = _normal_cdf
    # from cell i: to cell 0 when S + u - k < w (includes the reset at 0), to cell j otherwise
    upper = cdf(edges[None, 1:] - mids[:, None] + k)
    lower = cdf(edges[None, :-1] - mids[:, None] + k)
    trans = upper - lower
    trans[:, 0] = upper[:, 0]
    arl = np.linalg.solve(np.eye(states) - trans, np.ones(states))
    # start at S = 0: one step from 0
    start_upper = cdf(edges[1:] + k)
    start = start_upper - cdf(edges[:-1] + k)
    start[0] = start_upper[0]
    return float(1.0 + start @ arl)


_GRID = np.linspace(-12.0, 12.0, 48_001)
_GRID_CDF = np.array([_NORMAL.cdf(x) for x in _GRID])


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Φ by interpolation on a fine grid (error below 1e-8: plenty for run lengths)."""
    return np.asarray(np.interp(x, _GRID, _GRID_CDF))


@lru_cache(maxsize=32)
def cusum_threshold(expected_checks: float, k: float = CUSUM_K) -> float:
    """The ``h`` whose in-control run length is ``expected_checks`` (bisection)."""
    if expected_checks <= 1:
        raise ValueError("expected checks between false alarms must exceed 1")
    lo, hi = 0.0, 1.0
    while cusum_arl(hi, k) < expected_checks:
        lo, hi = hi, hi * 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cusum_arl(mid, k) < expected_checks else (lo, mid)
    return hi


@dataclass
class MonitorState:
    """The running state of the repeated mode, kept with each recorded check."""

    statistic: float = 0.0  # the CUSUM S after this check
    threshold: float = 0.0  # h
    k: float = CUSUM_K
    margin: float = 0.0  # the offset of the scores h allows for
    expected_checks_between_false_alarms: float = 0.0
    checks_since_alarm: int = 0
    increment: float | None = None  # u of this check (None: no new texts to score)
    new_rows: int = 0  # texts served since the previous check that this check scored
    last_row_at: str | None = None  # when the newest text scored so far was served
    alarm: bool = False
    mode: str = "repeated"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> MonitorState | None:
        if not data or data.get("mode") != "repeated":
            return None
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in fields})


def step(
    previous: MonitorState | None, expected_checks: float, p_value: float | None, new_rows: int, margin: float = 0.0
) -> MonitorState:
    """The state after one check: ``p_value`` of the texts served since the previous check
    (None: none to score, the statistic stays); ``h`` holds the run length for scores
    offset by up to ``margin`` (at most ``MAX_MARGIN``)."""
    margin = min(margin, MAX_MARGIN)
    h = cusum_threshold(round(expected_checks, 6), round(CUSUM_K - margin, 6))
    before = 0.0 if previous is None or previous.alarm else previous.statistic
    since = 0 if previous is None or previous.alarm else previous.checks_since_alarm
    u = None if p_value is None else normal_score(p_value)
    stat = before if u is None else max(0.0, before + u - CUSUM_K)
    alarm = stat >= h
    return MonitorState(
        statistic=stat,
        threshold=h,
        margin=margin,
        expected_checks_between_false_alarms=expected_checks,
        checks_since_alarm=0 if alarm else since + 1,
        increment=u,
        new_rows=new_rows,
        alarm=alarm,
    )


def expected_checks(false_alarm_every: str, check_every: str) -> float:
    """``false_alarm_every / check_every`` (e.g. 30d / 1h = 720)."""
    ratio = parse_duration(false_alarm_every) / parse_duration(check_every)
    if ratio <= 1 or not math.isfinite(ratio):
        raise ValueError(f"drift.false_alarm_every ({false_alarm_every}) must exceed drift.check_every ({check_every})")
    return ratio
