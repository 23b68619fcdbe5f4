"""The drift reference of a retrained version: the traffic it was retrained for.

A version is retrained because its traffic moved; a candidate whose reference is the corpus
one again (``drift.reference_data``) would see that traffic as drift on every check after
its promotion. So its reference and calibration set are texts the production version served
in the retrain's window (from ``since``, else from the oldest served row among the labels
read), one per distinct normalised text, in a seeded random order: a uniform draw of the
served texts, so the reference keeps the served mixture's proportions (70 % tweets and 30 %
reviews served: about the same in the reference). Labeled texts stay in the draw: an active
selection labels the most uncertain texts, so the texts left unlabeled are not a sample of
the traffic, and a calibrated test sees the difference (docs/drift.md). With fewer than
``MIN_SERVED`` such texts the reference stays the corpus one, and the run's
``sentops.reference_source`` tag and the retrain's result say so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from sentiment_ops import textnorm
from sentiment_ops.config import Settings
from sentiment_ops.drift.reference import REFERENCE_SEED, ReferencePlan
from sentiment_ops.store import InferenceStore, text_hash
from sentiment_ops.store.schema import as_utc

if TYPE_CHECKING:
    from sentiment_ops.jobs.retrain_data import RetrainData

# Below 200 served texts the reference and its calibration set would hold under 100 texts
# each: the calibration term 1/N of the test's variance would then outweigh a 500-row
# window's 1/n five-fold and most of the test's power would go, and nearest-reference
# distances to 100 texts are coarse. The corpus reference is the better default there.
MIN_SERVED = 200
SOURCE_TAG = "sentops.reference_source"


@dataclass
class ReferenceChoice:
    """Where the candidate's reference comes from: ``source`` "served" (``plan`` holds the
    texts) or "corpus" (``plan`` None: ``drift.reference_data``), and why."""

    source: str
    served_texts: int  # distinct texts served in the window
    reference: int
    calibration: int
    window: str
    note: str
    plan: ReferencePlan | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("plan")
        return out


def split_sizes(pool: int, reference: int, calibration: int) -> tuple[int, int]:
    """(reference, calibration) sizes from ``pool`` texts: the calibration set gets at most
    ``calibration`` and the reference at most ``reference``; when texts are scarce they
    share them evenly (the test needs both: nn distances to the reference, their null
    from the calibration set)."""
    ref = min(reference, max(pool - calibration, pool // 2))
    return ref, min(calibration, pool - ref)


def served_reference(
    settings: Settings, store: InferenceStore, data: RetrainData, version: int, since: datetime | None
) -> ReferenceChoice:
    """The candidate's reference (see the module docstring) from the texts ``version``
    served since ``since`` (None: since the oldest served labeled row)."""
    start = as_utc(since or data.feedback.first_served)
    window = f"served by v{version}" + (f" since {start.isoformat(timespec='seconds')}" if start else "")
    texts = _usable_texts(settings, store, version, start)
    if len(texts) < MIN_SERVED:
        note = (
            f"{len(texts)} distinct served texts ({window}; need {MIN_SERVED}): "
            f"reference from {settings.drift.reference_data} instead"
        )
        return ReferenceChoice("corpus", len(texts), 0, 0, window, note)
    order = np.random.default_rng(REFERENCE_SEED).permutation(len(texts))
    n_ref, n_cal = split_sizes(len(texts), settings.train.reference_samples, settings.drift.calibration_samples)
    ref = [texts[i] for i in order[:n_ref]]
    cal = [texts[i] for i in order[n_ref : n_ref + n_cal]]
    plan = ReferencePlan.served(ref, cal, f"served traffic of {settings.mlflow.model_name} v{version}", window)
    note = f"reference from {n_ref} texts {window} (+{n_cal} for calibration), drawn in the proportion served"
    return ReferenceChoice("served", len(texts), n_ref, n_cal, window, note, plan)


def _usable_texts(settings: Settings, store: InferenceStore, version: int, start: datetime | None) -> list[str]:
    """The served texts of the window, oldest first, one per distinct normalised text,
    labeled or not (see the module docstring)."""
    wanted = settings.train.reference_samples + settings.drift.calibration_samples
    rows = store.window(settings.mlflow.model_name, version, 2 * wanted, source="api")
    rows = [r for r in rows if r.text and (start is None or r.created_at >= start)]
    out: dict[str, str] = {}
    for r in rows:
        out.setdefault(_key(r.text), r.text)
    return list(out.values())


def _key(text: str) -> str:
    """Texts that differ only in markup or whitespace are one text to the model."""
    return text_hash(textnorm.clean(text))
