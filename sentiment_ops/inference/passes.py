"""Token ids → labels, probabilities and pooled embeddings, in forward passes grouped by
length. Torch-free: the same code drives the torch model and the ONNX graph.

- ``pad``: one pass's ids padded to its own longest text, with the attention mask.
- ``split_by_length``: which texts share a pass (shortest first; a new pass where padding
  would add more than half the work, or a pass would exceed a token budget).
- ``forward_grouped``: the passes of a ``Predictor`` over many texts, put back in order
  (serving, the drift reference, evaluation and batch scoring).
- ``prediction_from_logits``: logits → labels and class probabilities."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sentiment_ops.labels import BINARY, LabelSet

POOLING = "mean"  # the embedding: mean of the last hidden state over real tokens
PAD_SPLIT_FACTOR = 1.5  # start a new pass when a text is this much longer than the first


@dataclass
class Prediction:
    labels: np.ndarray  # int64 class indices (names: ``classes``)
    probabilities: np.ndarray  # float64 (n, k): each class's probability, rows sum to 1
    embeddings: np.ndarray | None  # float32 (n, hidden), mean-pooled last hidden state
    classes: LabelSet = BINARY

    @property
    def confidences(self) -> np.ndarray:
        """The probability of the predicted class."""
        if len(self.labels) == 0:
            return np.zeros(0)
        return np.asarray(self.probabilities[np.arange(len(self.labels)), self.labels])

    @property
    def positive(self) -> np.ndarray | None:
        """P(positive) of a binary model (the one-number score binary clients read); None
        for other class sets."""
        return np.asarray(self.probabilities[:, 1]) if self.classes.is_binary else None

    @property
    def label_names(self) -> list[str]:
        return [self.classes.names[i] for i in self.labels.tolist()]

    def take(self, index: np.ndarray | list[int]) -> Prediction:
        emb = None if self.embeddings is None else self.embeddings[index]
        return Prediction(self.labels[index], self.probabilities[index], emb, self.classes)

    @classmethod
    def empty(cls, classes: LabelSet = BINARY, dim: int = 0) -> Prediction:
        return cls(np.zeros(0, np.int64), np.zeros((0, classes.k)), np.zeros((0, dim), np.float32), classes)


PROBABILITY_PREFIX = "p_"


def probability_columns(classes: LabelSet) -> list[str]:
    """The column of each class's probability in tabular outputs (the logged pyfunc, batch
    scoring), in index order: ``p_<name>``, the name lower-cased with every character
    outside ``[a-z0-9_]`` made ``_`` (``Very good`` → ``p_very_good``); ``p_<index>`` for
    every class when two names would give one column."""
    safe = [PROBABILITY_PREFIX + re.sub(r"[^a-z0-9_]", "_", name.strip().lower()) for name in classes.names]
    if len(set(safe)) < len(safe):
        return [f"{PROBABILITY_PREFIX}{i}" for i in range(classes.k)]
    return safe


class Predictor(Protocol):
    """A backend: token ids of texts as clients sent them (``encode`` applies the model's
    own normaliser), then logits + pooled embeddings of one padded pass
    (``SentimentModel``, ``inference.onnx.OnnxPredictor``). ``classes``: the output names."""

    classes: LabelSet

    def encode(self, texts: list[str]) -> list[list[int]]: ...

    def forward_ids(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]: ...


def prediction_from_logits(
    logits: np.ndarray, embeddings: np.ndarray | None, classes: LabelSet | None = None
) -> Prediction:
    """Softmax of ``logits`` (n, k); ``classes`` defaults to binary for k = 2."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    if classes is None:
        classes = BINARY if probs.shape[1] == 2 else LabelSet(tuple(str(i) for i in range(probs.shape[1])))
    if classes.k != probs.shape[1]:
        raise ValueError(f"the model outputs {probs.shape[1]} scores for {classes.k} classes ({classes})")
    return Prediction(
        labels=probs.argmax(axis=1).astype(np.int64),
        probabilities=probs,
        embeddings=embeddings,
        classes=classes,
    )


def pad(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64, batch x longest of this batch only)."""
    width = max(len(ids) for ids in batch)
    input_ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for i, ids in enumerate(batch):
        input_ids[i, : len(ids)] = ids
        mask[i, : len(ids)] = 1
    return input_ids, mask


def split_by_length(
    lengths: list[int],
    factor: float | None = PAD_SPLIT_FACTOR,
    max_tokens: int | None = None,
    max_size: int | None = None,
) -> list[list[int]]:
    """Indices grouped (shortest first, ties in input order) so that in each group the
    longest is at most ``factor`` times the shortest (None: no such limit), group size x
    longest stays within ``max_tokens`` (a text longer than the budget gets a group of its
    own) and no group holds more than ``max_size``."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    for i in order:
        if groups:
            group = groups[-1]
            fits = max_tokens is None or (len(group) + 1) * lengths[i] <= max_tokens
            fits = fits and (max_size is None or len(group) < max_size)
            if fits and (factor is None or lengths[i] <= factor * lengths[group[0]]):
                group.append(i)
                continue
        groups.append([i])
    return groups


def forward_grouped(
    predictor: Predictor,
    ids: list[list[int]],
    *,
    max_tokens: int | None = None,
    max_size: int | None = None,
    factor: float | None = PAD_SPLIT_FACTOR,
) -> Prediction:
    """Labels, probabilities and embeddings of already-encoded texts, in input order: one
    ``forward_ids`` pass per ``split_by_length`` group, each padded to its own longest."""
    n = len(ids)
    logits: np.ndarray | None = None
    emb: np.ndarray | None = None
    for group in split_by_length([len(x) for x in ids], factor, max_tokens, max_size):
        lg, pooled = predictor.forward_ids([ids[i] for i in group])
        if logits is None or emb is None:
            logits = np.zeros((n, lg.shape[1]), dtype=np.float32)
            emb = np.zeros((n, pooled.shape[1]), dtype=np.float32)
        logits[group] = lg
        emb[group] = pooled
    classes = getattr(predictor, "classes", BINARY)
    if logits is None or emb is None:  # no texts
        return Prediction.empty(classes)
    return prediction_from_logits(logits, emb, classes)
