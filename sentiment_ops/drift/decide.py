"""How a drift check decides: the calibrated test for the version's reference, and the
repeated mode's CUSUM over checks (``drift.false_alarm_every``). No IO: the caller reads
the window, the reference and the previous check's state, and records the report."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

from sentiment_ops.config import Settings
from sentiment_ops.drift import monitor
from sentiment_ops.drift.calibrated import CalibratedTest
from sentiment_ops.drift.detectors import DriftReport, reference_classes

UNCALIBRATED = (
    "uncalibrated: this reference has no calibration set, so the permutation test decides and its "
    "false-alarm rate for this fixed reference is not alpha; run `sentops embed-reference` to add one"
)


def calibrated_test(ref: Any, components: int) -> CalibratedTest | None:
    """The calibrated test of a reference (None when it carries no calibration set)."""
    if ref.calibration is None or ref.calibration_predicted is None or len(ref.calibration) < 30:
        return None
    classes = reference_classes(ref.meta.label_mix)
    return CalibratedTest.fit(ref.embeddings, ref.calibration, ref.calibration_predicted, components, classes)


def apply_calibrated(report: DriftReport, test: CalibratedTest | None, emb: np.ndarray, labels: np.ndarray) -> None:
    """Decide ``report`` by the calibrated test (``test`` None: the permutation test stays,
    marked uncalibrated)."""
    if test is None:
        report.method = "mmd_nn"
        report.guarantee = UNCALIBRATED
        return
    res = test.test(emb, labels)
    report.method = "calibrated"
    report.p_value = res.p_value
    report.test_drift = res.p_value < report.alpha
    report.drift = report.test_drift
    report.calibrated = {
        "z": res.z,
        "statistic": res.statistic,
        "threshold": test.threshold(report.alpha, res.n),
        "window_means": res.window_means,
        "calibration_means": res.calibration_means,
        "calibration_n": res.calibration_n,
        "label_class": test.label_class,  # whose window share the third score is (reported only)
    }
    report.guarantee = (
        f"single check: with no shift this check alarms with probability {report.alpha:g} for this reference "
        f"(calibrated on {res.calibration_n} held-out texts)"
    )


def apply_monitor(
    report: DriftReport,
    settings: Settings,
    previous: dict[str, Any] | None,
    test: CalibratedTest | None,
    rows: Sequence[Any],
) -> None:
    """The repeated mode: score the rows served since the previous check's newest row,
    step the CUSUM, and let its alarm decide ``report``. ``previous``: that check's
    ``monitor`` state (None: the first check)."""
    cfg = settings.drift
    assert cfg.false_alarm_every is not None
    expected = monitor.expected_checks(cfg.false_alarm_every, cfg.check_every)
    state = monitor.MonitorState.from_dict(previous)
    since = _parse(state.last_row_at) if state else None
    fresh = [i for i, r in enumerate(rows) if since is None or _as_naive(r.created_at) > since]
    p = None
    if len(fresh) >= cfg.min_rows:
        emb = np.vstack([np.asarray(rows[i].embedding, dtype=np.float32) for i in fresh])
        lab = np.array([-1 if rows[i].prediction is None else int(rows[i].prediction) for i in fresh])
        p = test.test(emb, lab).p_value if test is not None else report.p_value
    margin = test.offset_margin(cfg.window) if test is not None else 0.0
    new = monitor.step(state, expected, p, len(fresh) if p is not None else 0, margin)
    newest = max((_as_naive(r.created_at) for r in rows), default=None) if p is not None else since
    new.last_row_at = newest.isoformat() if newest is not None else None
    report.mode = "repeated"
    report.monitor = new.to_dict()
    report.drift = new.alarm
    cal = "" if test is not None else f" ({UNCALIBRATED})"
    if test is not None and margin > monitor.MAX_MARGIN:
        cal = (
            f"; the calibration set ({test.n_cal} texts) is small for a window of {cfg.window}: its own error "
            "can shorten that time (add held-out texts with `sentops embed-reference`)"
        )
    report.guarantee = (
        f"repeated checks every {cfg.check_every}: with no shift a false alarm comes on average once every "
        f"{cfg.false_alarm_every} ({expected:g} checks: CUSUM of the calibrated scores, threshold "
        f"{new.threshold:.2f}){cal}"
    )


def _as_naive(value: datetime) -> datetime:
    return value.replace(tzinfo=None) if value.tzinfo is not None else value


def _parse(text: str | None) -> datetime | None:
    return _as_naive(datetime.fromisoformat(text)) if text else None
