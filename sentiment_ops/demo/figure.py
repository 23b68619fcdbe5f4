"""The picture of one demo run (matplotlib, imported when drawn)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sentiment_ops.config import Settings
from sentiment_ops.demo.report import DemoReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

P_FLOOR = 1e-3  # the p-value axis starts here; smaller p-values are drawn on it


def story_checks(report: DemoReport) -> list[tuple[str, dict[str, Any]]]:
    """The drift checks of this run, in order, each named by the traffic it saw."""
    named = [("IMDB", report.drift_imdb), ("tweets", report.drift_tweets), ("after reload", report.drift_after)]
    return [(name, check) for name, check in named if check]


def story_figure(report: DemoReport, alpha: float) -> Figure:
    """The picture of one demo run: left, the p-value of each drift check on a log axis
    (``P_FLOOR`` to 1) with the ``alpha`` line, the cosine distance on a second axis, and
    where the promotion and the reload happened; right, tweet accuracy / F1 before vs after."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    checks = story_checks(report)
    xs = list(range(1, len(checks) + 1))
    legend_on = ax1
    if checks:
        p_values = [max(float(c["p_value"]), P_FLOOR) for _, c in checks]
        ax1.plot(xs, p_values, "o-", color="C0", label="drift test p-value", clip_on=False)
        for x, p, (_, c) in zip(xs, p_values, checks, strict=True):
            ax1.annotate("drift" if c["drift"] else "ok", (x, p), textcoords="offset points", xytext=(5, 5))
        cosine = ax1.twinx()
        cosine.plot(xs, [c["cosine_distance"] for _, c in checks], "s--", color="C2", label="cosine distance")
        cosine.set_ylabel("cosine distance to the reference", color="C2")
        cosine.set_ylim(bottom=0)
        legend_on = cosine  # drawn last, so the legend is not hidden under its line
    ax1.axhline(alpha, color="red", lw=0.8, label=f"alpha {alpha}")
    _mark_promotion(ax1, report, len(checks))
    ax1.set_yscale("log")
    ax1.set_ylim(P_FLOOR, 1.0)
    ax1.set_ylabel("p-value (log scale)")
    ax1.set_xticks(xs, [name for name, _ in checks])
    ax1.set_xlim(0.5, max(len(checks), 1) + 0.5)
    ax1.set_xlabel("drift check, by the traffic it saw")
    handles = [h for ax in fig.axes if ax is not ax2 for h in ax.get_legend_handles_labels()[0]]
    legend_on.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    ax1.set_title("Drift checks over the demo")
    _before_after_bars(ax2, report)
    fig.tight_layout()
    return fig


def _mark_promotion(ax: Any, report: DemoReport, n_checks: int) -> None:
    """Vertical lines after the tweet check (number 2): the promotion, then the reload."""
    if not report.promoted or n_checks < 2:
        return
    version = report.retrain.get("version")
    ax.axvline(2.33, color="C1", ls=":", label=f"promoted v{version}")
    reload_s = "" if report.reload_seconds is None else f" ({report.reload_seconds:.1f} s)"
    ax.axvline(2.67, color="C4", ls="-.", label=f"server reloaded{reload_s}")


def _before_after_bars(ax: Any, report: DemoReport) -> None:
    names = ["accuracy", "f1"]
    before = [report.tweets_before.get(n, 0.0) for n in names]
    after = [report.tweets_after.get(n, 0.0) for n in names]
    pos = np.arange(len(names))
    ax.bar(pos - 0.2, before, 0.4, label=f"before (v{report.production_before})")
    ax.bar(pos + 0.2, after, 0.4, label=f"after (v{report.production_after})")
    for i in range(len(names)):
        ax.text(pos[i] - 0.2, before[i] + 0.01, f"{before[i]:.3f}", ha="center", fontsize=8)
        ax.text(pos[i] + 0.2, after[i] + 0.01, f"{after[i]:.3f}", ha="center", fontsize=8)
    ax.set_xticks(pos, ["tweet accuracy", "tweet F1"])
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("Served model on held-out tweets")


def draw_story(settings: Settings, report: DemoReport, path: Path) -> Path:
    """``story_figure`` of ``report`` saved as a PNG at ``path``."""
    fig = story_figure(report, settings.drift.alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
