"""The champion/challenger gate of ``sentops retrain``: a candidate replaces production only
when its new-domain F1 rises by at least ``retrain.min_f1_gain`` and its golden accuracy falls
by at most ``retrain.max_acc_drop`` (docs/retraining.md). The F1 is the positive class's for a
binary model and macro-F1 for more classes; a model whose classes lack negative or positive
has no golden hold-out, and only the F1 gain decides."""

from __future__ import annotations

from dataclasses import dataclass, field

_EPS = 1e-9  # float slack so a gain of exactly δ passes


@dataclass
class GateDecision:
    passed: bool
    f1_gain: float | None  # candidate minus production F1 on the new-domain hold-out
    golden_acc_drop: float | None  # production minus candidate golden accuracy (None: no golden hold-out)
    min_f1_gain: float
    max_acc_drop: float
    reasons: list[str] = field(default_factory=list)  # why it failed (empty when passed)
    f1_name: str = "F1"  # which F1: "F1" (of positive, binary) or "macro-F1"


def gate(
    *,
    candidate_new_f1: float | None,
    production_new_f1: float | None,
    candidate_golden_acc: float | None,
    production_golden_acc: float | None,
    min_f1_gain: float,
    max_acc_drop: float,
    f1_name: str = "F1",
) -> GateDecision:
    """Champion/challenger: pass only if new-domain F1 (``f1_name`` says which) rises by ≥
    ``min_f1_gain`` and golden accuracy, when there is a golden hold-out, falls by ≤
    ``max_acc_drop``. No new-domain hold-out → fail."""
    reasons = []
    drop = None
    if candidate_golden_acc is not None and production_golden_acc is not None:
        drop = production_golden_acc - candidate_golden_acc
    gain = None
    if candidate_new_f1 is None or production_new_f1 is None:
        reasons.append("no new-domain hold-out with real labels to compare on")
    else:
        gain = candidate_new_f1 - production_new_f1
        if gain < min_f1_gain - _EPS:
            reasons.append(f"new-domain {f1_name} gain {gain:+.4f} is below the required {min_f1_gain:+.4f}")
    if drop is not None and drop > max_acc_drop + _EPS:
        reasons.append(f"golden accuracy drop {drop:.4f} exceeds the allowed {max_acc_drop:.4f}")
    return GateDecision(not reasons, gain, drop, min_f1_gain, max_acc_drop, reasons, f1_name)


def describe(decision: GateDecision) -> str:
    """The decision and its numbers in one line, for people (a model version's description)."""
    name = decision.f1_name
    gain = "no new-domain hold-out" if decision.f1_gain is None else f"new-domain {name} gain {decision.f1_gain:+.4f}"
    numbers = f"{gain} (required ≥ {decision.min_f1_gain:+.4f}), " + (
        "no golden hold-out (the classes lack negative or positive)"
        if decision.golden_acc_drop is None
        else f"golden accuracy drop {decision.golden_acc_drop:+.4f} (allowed ≤ {decision.max_acc_drop:.4f})"
    )
    if decision.passed:
        return f"gate passed: {numbers}"
    return f"gate failed ({'; '.join(decision.reasons)}): {numbers}"
