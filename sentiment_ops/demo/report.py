"""What one demo run is asked to do (``DemoOptions``) and what it did (``DemoReport``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

StageFn = Callable[[str, str], None]  # (stage, message)


def quiet(stage: str, message: str) -> None:
    return None


@dataclass
class DemoOptions:
    """How this run goes; what it trains and sends is the ``demo`` settings section."""

    reuse: bool = True  # reuse the production model when there is one
    out_dir: Path = field(default_factory=lambda: Path("sentops-demo"))
    # which served tweets the simulated person labels: a labeling.Strategy; "random" labels the
    # first ones sent (the tweets are shuffled), as the demo did before active selection
    labels_from: str = "mixed"


@dataclass
class DemoReport:
    base_url: str = ""
    production_before: int | None = None
    production_after: int | None = None
    trained_new_model: bool = False
    drift_imdb: dict[str, Any] = field(default_factory=dict)
    drift_tweets: dict[str, Any] = field(default_factory=dict)
    drift_after: dict[str, Any] = field(default_factory=dict)  # the new version on tweets, after the reload
    labels_posted: int = 0
    labels_from: str = ""  # the strategy that chose them
    retrain: dict[str, Any] = field(default_factory=dict)
    promoted: bool = False
    reload_seconds: float | None = None
    tweets_before: dict[str, float] = field(default_factory=dict)
    tweets_after: dict[str, float] = field(default_factory=dict)
    stored_rows: int = 0
    sent_rows: int = 0
    picture: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def took(seconds: float) -> str:
    """A duration as a phase line shows it: ``42 s``, ``7 min 05 s``."""
    whole = round(seconds)
    return f"{seconds:.1f} s" if seconds < 60 else f"{whole // 60} min {whole % 60:02d} s"
