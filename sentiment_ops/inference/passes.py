"""Token ids → labels, probabilities and pooled embeddings, in forward passes grouped by
length. Torch-free: the same code drives the torch model and the ONNX graph.

- ``pad``: one pass's ids padded to its own longest text, with the attention mask.
- ``split_by_length``: which texts share a pass (shortest first; a new pass where padding
  would add more than half the work, or a pass would exceed a token budget).
- ``forward_grouped``: the passes of a ``Predictor`` over many texts, put back in order
  (serving, the drift reference, evaluation and batch scoring).
- ``prediction_from_logits``: logits → labels and positive-class probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

POOLING = "mean"  # the embedding: mean of the last hidden state over real tokens
PAD_SPLIT_FACTOR = 1.5  # start a new pass when a text is this much longer than the first


@dataclass
class Prediction:
    labels: np.ndarray  # int64, 0 = negative, 1 = positive
    probabilities: np.ndarray  # float64, P(positive)
    embeddings: np.ndarray | None  # float32 (n, hidden), mean-pooled last hidden state

    @property
    def confidences(self) -> np.ndarray:
        return np.where(self.labels == 1, self.probabilities, 1.0 - self.probabilities)


class Predictor(Protocol):
    """A backend: token ids of texts as clients sent them (``encode`` applies the model's
    own normaliser), then logits + pooled embeddings of one padded pass
    (``SentimentModel``, ``inference.onnx.OnnxPredictor``)."""

    def encode(self, texts: list[str]) -> list[list[int]]: ...

    def forward_ids(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]: ...


def prediction_from_logits(logits: np.ndarray, embeddings: np.ndarray | None) -> Prediction:
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    return Prediction(
        labels=probs.argmax(axis=1).astype(np.int64),
        probabilities=probs[:, 1],
        embeddings=embeddings,
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
    if logits is None or emb is None:  # no texts
        return Prediction(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 0), np.float32))
    return prediction_from_logits(logits, emb)
