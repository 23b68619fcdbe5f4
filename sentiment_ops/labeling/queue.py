"""The labeling queue: what a person should label next, chosen from the served window.

``choose_to_label`` reads the most recent ``window`` predictions the version behind
``serve.alias`` served (the drift check's window, read the same way), keeps the ones worth
asking about and ranks them by a ``Strategy`` (``labeling.strategies``); a ``Selection``
holds the choice (strategy, how many, seed, window, since, version):

* only rows that kept their text and hold no label; with ``store.store_text`` off there are
  no texts to ask about, and the queue says so (``TextsNotKeptError``) instead of offering
  empty texts or hashes;
* one row per distinct text (the newest), and no text that holds a label on any row
  already (served twice, or imported with ``sentops feedback import``);
* ``uncertain`` and ``mixed`` rank by the margin over the version's classes, from each row's
  probabilities (``probability_matrix``);
* ``novel`` and ``mixed`` use the embeddings the server logged, so only rows embedded by
  the serving backend (``serve.backend``) take part; ``novel`` compares them with that
  backend's reference, logged with the version's run (``drift.reference``).

``export_selection`` writes the queue as a file people label (``sentops feedback export
--select``); the labeling page (``serving.label_page``) serves it one text at a time.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from sentiment_ops.config import Settings
from sentiment_ops.drift.reference import download_reference
from sentiment_ops.errors import DataError
from sentiment_ops.feedback import ExportSummary, TextsNotKeptError, check_export_path, write_export
from sentiment_ops.labeling import Strategy
from sentiment_ops.labeling.strategies import select
from sentiment_ops.labels import BINARY, LabelSet
from sentiment_ops.store import InferenceStore, PredictionRecord, text_hash
from sentiment_ops.store.schema import as_utc
from sentiment_ops.tracking.predictors import resolve_version
from sentiment_ops.tracking.registry import Registry

DEFAULT_POOL = 5000  # the most recent served predictions chosen from


@dataclass
class QueueItem:
    record: PredictionRecord
    score: float  # the strategy's score (see strategies.Pick)
    cluster: int | None = None
    classes: LabelSet = BINARY  # the version's classes: the name of the prediction

    def to_dict(self) -> dict[str, Any]:
        r, k = self.record, self.classes.k
        return {
            "id": r.id,
            "text": r.text,
            "prediction": r.prediction,
            "label": self.classes.name(r.prediction) if r.prediction is not None and 0 <= r.prediction < k else None,
            "probability": None if r.probability is None else round(float(r.probability), 4),
            "confidence": None if r.confidence is None else round(float(r.confidence), 4),
            "score": round(self.score, 6),
            "cluster": self.cluster,
        }


@dataclass
class LabelQueue:
    strategy: Strategy
    seed: int
    model_name: str
    version: int
    window: int
    pool: int = 0  # rows that could be chosen
    labeled: int = 0  # left out: labeled (this row, or the same text on another row)
    duplicates: int = 0  # left out: an older row of the same text
    no_text: int = 0  # left out: logged without its text
    no_embedding: int = 0  # left out (novel, mixed): no embedding of the serving backend
    items: list[QueueItem] = field(default_factory=list)
    classes: LabelSet = BINARY  # the version's classes, in index order

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "items"}
        out["strategy"] = str(self.strategy)
        out["classes"] = list(self.classes.names)
        out["items"] = [i.to_dict() for i in self.items]
        return out


def _row_probabilities(record: PredictionRecord, k: int) -> np.ndarray | None:
    """A row's k class probabilities as the server logged them (a list, or its JSON), if it did."""
    raw = getattr(record, "probabilities", None)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    if raw is None:
        return None
    p = np.asarray(raw, dtype=np.float64).ravel()
    return p if p.shape == (k,) and np.isfinite(p).all() else None


def probability_matrix(rows: Sequence[PredictionRecord], classes: LabelSet) -> np.ndarray:
    """(n, k) class probabilities of served rows: the row's own when logged; else, for a
    binary model, from P(positive); else the predicted class's confidence with the rest
    spread evenly; a row with none of these is a tie (uniform)."""
    k = classes.k
    out = np.full((len(rows), k), 1.0 / k)
    for i, r in enumerate(rows):
        own = _row_probabilities(r, k)
        if own is not None:
            out[i] = own
        elif classes.is_binary:
            if r.probability is not None:
                out[i] = (1.0 - r.probability, r.probability)
        elif r.confidence is not None and r.prediction is not None and 0 <= r.prediction < k:
            out[i] = (1.0 - r.confidence) / (k - 1)
            out[i, r.prediction] = r.confidence
    return out


def candidate_rows(store: InferenceStore, queue: LabelQueue, since: datetime | None = None) -> list[PredictionRecord]:
    """The window's rows worth asking about (see the module docstring), oldest first;
    what was left out is counted in ``queue``."""
    rows = store.window(queue.model_name, queue.version, queue.window, source="api")
    cutoff = as_utc(since)
    if cutoff is not None:
        rows = [r for r in rows if r.created_at >= cutoff]
    with_text = [r for r in rows if r.text]
    queue.no_text = len(rows) - len(with_text)
    hashes = [text_hash(r.text) for r in with_text]
    newest = dict(zip(hashes, with_text, strict=True))  # oldest first: the newest row of a text wins
    labeled = store.labeled_hashes(newest)
    out = [r for h, r in newest.items() if h not in labeled and r.feedback_label is None]
    queue.labeled = sum(
        1 for h, r in zip(hashes, with_text, strict=True) if r.feedback_label is not None or h in labeled
    )
    queue.duplicates = len(with_text) - queue.labeled - len(out)
    return sorted(out, key=lambda r: (r.created_at, r.id))


@dataclass(frozen=True)
class Selection:
    """What to choose: ``n`` texts by ``strategy`` (a name is taken too), seeded by ``seed``,
    from the last ``window`` (default ``DEFAULT_POOL``) predictions logged ``since`` a time,
    of ``version`` (default: the one behind ``serve.alias``). Checked when made (DataError)."""

    strategy: Strategy
    n: int
    seed: int = 0
    window: int | None = None
    since: datetime | None = None
    version: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", Strategy(self.strategy))
        if self.n < 1:
            raise DataError(f"the number of texts to choose must be at least 1, got {self.n}")
        if self.window is not None and self.window < 1:
            raise DataError(f"window must be at least 1, got {self.window}")
        if self.seed < 0:
            raise DataError(f"seed must be 0 or more, got {self.seed}")


def choose_to_label(settings: Settings, registry: Registry, store: InferenceStore, selection: Selection) -> LabelQueue:
    """The served texts to label first, as ``selection`` says; the version and its
    reference come from ``registry``. Deterministic for a given store and selection.
    Raises ``TextsNotKeptError`` when ``store.store_text`` is false."""
    if not settings.store.store_text:
        raise TextsNotKeptError()
    strategy, n, seed = selection.strategy, selection.n, selection.seed
    info = resolve_version(registry, selection.version, None)
    backend = settings.serve.backend
    # novel: a version without a reference is a setup problem to report, whatever the window holds
    reference = _reference(registry, str(info.run_id), backend) if strategy is Strategy.NOVEL else None
    queue = LabelQueue(strategy, seed, settings.mlflow.model_name, info.version, selection.window or DEFAULT_POOL)
    queue.classes = registry.version_classes(info.version)
    rows = candidate_rows(store, queue, selection.since)
    if strategy.needs_embeddings:
        usable = [r for r in rows if r.embedding is not None and r.backend == backend]
        queue.no_embedding, rows = len(rows) - len(usable), usable
    queue.pool = len(rows)
    if not rows:
        return queue
    probabilities = probability_matrix(rows, queue.classes)
    embeddings = np.vstack([np.asarray(r.embedding) for r in rows]) if strategy.needs_embeddings else None
    if reference is not None and embeddings is not None and reference.shape[1] != embeddings.shape[1]:
        raise DataError(
            f"the served embeddings have {embeddings.shape[1]} dimensions but the reference of version "
            f"{info.version} has {reference.shape[1]}: run `sentops embed-reference --version {info.version}`"
        )
    picks = select(strategy, n, seed, probabilities=probabilities, embeddings=embeddings, reference=reference)
    queue.items = [QueueItem(rows[p.index], p.score, p.cluster, queue.classes) for p in picks]
    return queue


def _reference(registry: Registry, run_id: str, backend: str) -> np.ndarray:
    """The reference embeddings of ``backend`` logged with the run (NotFoundError naming
    ``sentops embed-reference`` when there are none)."""
    with tempfile.TemporaryDirectory() as tmp:
        return download_reference(registry, run_id, Path(tmp), backend).embeddings


@dataclass
class SelectionExport:
    export: ExportSummary
    queue: LabelQueue

    def to_dict(self) -> dict[str, Any]:
        q = self.queue.to_dict()
        q.pop("items")
        return {**self.export.to_dict(), **q}


def export_selection(
    settings: Settings,
    registry: Registry,
    store: InferenceStore,
    selection: Selection,
    path: str | Path,
    overwrite: bool = False,
) -> SelectionExport:
    """``choose_to_label`` written as a feedback file (``id,text,prediction,confidence,label``),
    in the order to label; import it back with ``sentops feedback import``. An existing file
    is replaced only with ``overwrite``."""
    check_export_path(Path(path), overwrite)  # before the choice, which reads the store
    queue = choose_to_label(settings, registry, store, selection)
    summary = write_export(path, [i.record for i in queue.items], overwrite=overwrite, classes=queue.classes)
    return SelectionExport(summary, queue)
