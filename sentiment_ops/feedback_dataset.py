"""What ``sentops retrain`` learns from: the labeled rows of the inference store (feedback
labels, never the model's own predictions unless pseudo-labels are asked for), one row per
distinct normalised text, split (stratified, seeded) into training rows and a new-domain
hold-out; and which corpus to replay."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np

from sentiment_ops import textnorm
from sentiment_ops.config import Settings
from sentiment_ops.data import Split
from sentiment_ops.errors import DataError, NotEnoughDataError
from sentiment_ops.labels import LabelSet
from sentiment_ops.store import InferenceStore, PredictionRecord, text_hash

MIN_PSEUDO_HOLDOUT = 10  # real labels needed before pseudo-label mode keeps a hold-out


@dataclass
class FeedbackData:
    train: Split  # new-domain training rows (real labels, plus pseudo-labels if asked)
    holdout: Split  # real labels only
    real: int  # distinct labeled texts found
    pseudo: int  # distinct confident predictions used as labels
    skipped_no_text: int  # rows logged without their text (store_text off)
    first_served: datetime | None = None  # when the oldest served (not imported) labeled row was served


def _distinct(records: list[PredictionRecord], labels: list[int], skip: set[str]) -> dict[str, tuple[str, int]]:
    """hash of the normalised text → (text as sent, label); rows are oldest first, so the
    newest label wins. Texts that differ only in markup or whitespace are one text to the
    model (``textnorm``): counted once, never one in training and one in the hold-out."""
    out: dict[str, tuple[str, int]] = {}
    for rec, label in zip(records, labels, strict=True):
        h = text_hash(textnorm.clean(rec.text or ""))
        if h not in skip:
            out[h] = (rec.text, label)
    return out


def _as_split(rows: list[tuple[str, int]]) -> Split:
    return Split([t for t, _ in rows], np.asarray([lbl for _, lbl in rows], dtype=np.int64))


def concat(*splits: Split) -> Split:
    """The rows of ``splits`` in order, with the classes of the first."""
    labels = np.concatenate([s.labels for s in splits]).astype(np.int64)
    return Split([t for s in splits for t in s.texts], labels, splits[0].classes)


def _split(rows: list[tuple[str, int]], fraction: float, seed: int) -> tuple[Split, Split]:
    """Stratified, seeded train / hold-out split."""
    from sklearn.model_selection import train_test_split

    texts, labels = [t for t, _ in rows], np.asarray([lbl for _, lbl in rows], dtype=np.int64)
    idx = np.arange(len(rows))
    try:
        tr, ho = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError:  # a class too small to stratify: plain seeded split
        tr, ho = train_test_split(idx, test_size=fraction, random_state=seed)
    tr, ho = np.sort(tr), np.sort(ho)
    return Split([texts[i] for i in tr], labels[tr]), Split([texts[i] for i in ho], labels[ho])


def feedback_data(
    store: InferenceStore,
    settings: Settings,
    *,
    window: int | None = None,
    since: datetime | None = None,
    pseudo_label_threshold: float | None = None,
) -> FeedbackData:
    """The new-domain training rows and hold-out, from the store's labeled rows."""
    cfg, model_name = settings.retrain, settings.mlflow.model_name
    labeled = store.rows(since=since, limit=window, labeled=True, model_name=model_name)
    with_text = [r for r in labeled if r.text]
    real = _distinct(with_text, [int(r.feedback_label or 0) for r in with_text], set())
    skipped = len(labeled) - len(with_text)
    pseudo: dict[str, tuple[str, int]] = {}
    if pseudo_label_threshold is not None:
        served = store.rows(since=since, limit=window, labeled=False, source="api", model_name=model_name)
        confident = [
            r for r in served if r.text and r.prediction is not None and (r.confidence or 0.0) >= pseudo_label_threshold
        ]
        pseudo = _distinct(confident, [int(r.prediction or 0) for r in confident], set(real))
    found = len(real) + len(pseudo)
    if found < cfg.min_labels:
        what = f"{len(real)} labeled texts" + (
            f" and {len(pseudo)} predictions with confidence ≥ {pseudo_label_threshold}"
            if pseudo_label_threshold
            else ""
        )
        raise NotEnoughDataError(
            f"found {what} (need at least {cfg.min_labels}); add labels with `sentops feedback import` "
            "or POST /feedback, or lower retrain.min_labels"
        )
    all_labels = {lbl for _, lbl in [*real.values(), *pseudo.values()]}
    if len(all_labels) < 2:
        raise NotEnoughDataError(f"all {found} labels are {sorted(all_labels)}: retraining needs two classes at least")
    real_rows = list(real.values())
    if pseudo_label_threshold is not None and len(real_rows) < MIN_PSEUDO_HOLDOUT:
        # Too few real labels to judge anything: all of them train, and the gate will
        # refuse (pseudo-labels cannot judge the model that made them).
        train_real, holdout = _as_split(real_rows), _as_split([])
    else:
        train_real, holdout = _split(real_rows, cfg.holdout_fraction, settings.train.seed)
    train = concat(train_real, _as_split(list(pseudo.values())))
    first = min((r.created_at for r in with_text if r.source == "api"), default=None)
    return FeedbackData(train, holdout, len(real), len(pseudo), skipped, first)


class UnknownClassError(DataError):
    """A feedback label is a class the production model does not have: retraining keeps
    production's classes, so a new class needs a new model (``sentops train``)."""


def with_classes(fb: FeedbackData, classes: LabelSet, version: int) -> FeedbackData:
    """``fb`` with its labels read as production's ``classes`` (version ``version``);
    ``UnknownClassError`` when one is not among them."""
    labels = np.concatenate([fb.train.labels, fb.holdout.labels]).astype(np.int64)
    unknown = sorted({int(x) for x in labels if not 0 <= x < classes.k})
    if unknown:
        count = int(np.isin(labels, unknown).sum())
        raise UnknownClassError(
            f"{count} feedback label(s) are class {', '.join(map(str, unknown))}, which production version {version} "
            f"does not have (its classes: {', '.join(classes.names)}); retraining keeps production's classes: "
            "to learn new ones, train a new model with `sentops train --data FILE` on a file whose label column "
            "names every class"
        )
    return replace(fb, train=replace(fb.train, classes=classes), holdout=replace(fb.holdout, classes=classes))


def replay_data_name(settings: Settings, parent_tags: dict[str, str]) -> str:
    """Which corpus to replay: the setting, else what the parent was trained on."""
    if settings.retrain.replay_data:
        return settings.retrain.replay_data
    for key in ("sentops.replay_data", "sentops.data"):
        value = parent_tags.get(key)
        if value and value != "feedback":
            return value
    return settings.train.data
