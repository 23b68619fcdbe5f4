"""What ``retrain`` trains on: the feedback labels of the inference store (the options of
``RetrainRequest``), split by ``feedback_dataset``, mixed with a replay sample of the
corpus production was trained on, and the golden hold-out both models are scored on: all
with production's classes (the golden IMDB hold-out only when they include negative and
positive)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sentiment_ops.config import Settings
from sentiment_ops.data import Split, golden_test, load_corpus
from sentiment_ops.errors import DataError
from sentiment_ops.feedback_dataset import FeedbackData, concat, feedback_data, replay_data_name, with_classes
from sentiment_ops.labels import LabelSet
from sentiment_ops.store import InferenceStore, using_store
from sentiment_ops.tracking.runs import LoggedSplit

if TYPE_CHECKING:
    from sentiment_ops.jobs.fit import FitOptions
    from sentiment_ops.tracking.registry import VersionInfo


@dataclass
class RetrainRequest:
    """What one retraining reads and fine-tunes with, from the ``retrain`` settings (validated
    there): the labels of the last ``window`` rows, or those logged ``since`` a time."""

    window: int | None
    since: datetime | None
    replay_ratio: float
    pseudo_label_threshold: float | None
    fit: FitOptions

    @classmethod
    def from_settings(cls, settings: Settings, since: datetime | None = None) -> RetrainRequest:
        from sentiment_ops.jobs.fit import FitOptions

        cfg = settings.retrain
        window = None if since is not None else cfg.window
        fit = FitOptions.from_retrain_settings(settings)
        return cls(window, since, cfg.replay_ratio, cfg.pseudo_label_threshold, fit)


@dataclass
class RetrainData:
    feedback: FeedbackData
    replay_name: str
    replay: Split
    train: Split  # feedback training rows + replay
    golden: Split | None  # the golden IMDB hold-out; None for classes without negative and positive

    def describe(self) -> dict[str, Any]:
        fb = self.feedback
        return {
            "labels_real": fb.real,
            "labels_pseudo": fb.pseudo,
            "labels_train": len(fb.train),
            "labels_holdout": len(fb.holdout),
            "labels_skipped_no_text": fb.skipped_no_text,
            "train_label_counts": fb.train.label_counts(),
            "holdout_label_counts": fb.holdout.label_counts(),
            "replay_data": self.replay_name,
            "replay_size": len(self.replay),
            "train_size": len(self.train),
            "golden_size": len(self.golden) if self.golden is not None else 0,
            "feedback_hash": fb.train.hash,
            "holdout_hash": fb.holdout.hash,
            "replay_hash": self.replay.hash,
            "train_hash": self.train.hash,
            "golden_hash": self.golden.hash if self.golden is not None else None,
            "labels": ",".join(self.train.classes.names),
        }


def read_feedback(settings: Settings, store: InferenceStore | None, req: RetrainRequest) -> FeedbackData:
    """The feedback rows, from ``store`` (or the settings' store, opened and closed here)."""
    with using_store(settings, store) as opened:
        return feedback_data(
            opened, settings, window=req.window, since=req.since, pseudo_label_threshold=req.pseudo_label_threshold
        )


def with_replay(
    settings: Settings, fb: FeedbackData, parent: VersionInfo, req: RetrainRequest, classes: LabelSet
) -> RetrainData:
    """The feedback rows as production's ``classes`` (``UnknownClassError`` for a label it
    does not have), a replay sample of its corpus read with those classes, and the golden
    hold-out when the classes have both poles."""
    fb = with_classes(fb, classes, parent.version)
    name = replay_data_name(settings, parent.tags)
    corpus = load_corpus(name, None if classes.is_binary else classes.names)
    if corpus.classes != classes:
        raise DataError(
            f"replay data {name!r} has the classes {corpus.classes}, production version {parent.version} has "
            f"{classes}: set retrain.replay_data to data of production's classes"
        )
    replay = corpus.train.sample(round(req.replay_ratio * len(fb.train)), seed=settings.train.seed)
    golden = golden_test(settings.retrain.golden_samples) if classes.has_poles() else None
    return RetrainData(fb, name, replay, concat(fb.train, replay), golden)


def logged_splits(data: RetrainData) -> dict[str, LoggedSplit]:
    """The retrain run's dataset inputs by metric prefix: the feedback labels and the replay
    rows (training), the new-domain hold-out (validation) and the golden hold-out."""
    fb = data.feedback
    store = "feedback labels from the inference store"
    out = {
        "feedback": LoggedSplit("feedback-train", "training", fb.train, store),
        "replay": LoggedSplit(f"{data.replay_name}-replay", "training", data.replay, f"{data.replay_name} train split"),
    }
    if data.golden is not None:
        out["candidate_golden"] = LoggedSplit("imdb-golden", "golden", data.golden, "imdb test split (first rows)")
        out["golden"] = out["candidate_golden"]
    if len(fb.holdout):
        out["candidate_new"] = LoggedSplit("feedback-holdout", "validation", fb.holdout, store)
    return out
