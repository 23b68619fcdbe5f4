"""Which texts of a pool a person should label first (pure numpy: no store, no MLflow).

Every strategy returns pool positions in the order to label them, and is deterministic
for a given seed: ties are broken by a seeded random permutation, never by the order the
rows happened to come in.

* ``random``: a seeded random sample (the baseline).
* ``uncertain``: the rows closest to a decision boundary: smallest margin first, half the
  gap between the two most probable classes, ``(p1 - p2) / 2`` over the k class
  probabilities (``|P(positive) - 0.5|`` for a binary model).
* ``novel``: the rows farthest from the model version's reference embeddings (distance to
  the nearest reference row, as the drift check's ``farthest_texts``), farthest first.
* ``mixed``: diversity first. Seeded k-means (k-means++ start) on the L2-normalised
  embeddings with ``k = min(n, MAX_CLUSTERS)``; within each cluster its rows by
  uncertainty; then round-robin over the clusters (the cluster holding the most uncertain
  row first), so a block of near-duplicates yields one label per round, not ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sentiment_ops.labeling import Strategy

MAX_CLUSTERS = 200  # k-means clusters at most (mixed): beyond, a pick goes round-robin
KMEANS_ITERATIONS = 50  # Lloyd steps at most; it usually settles in 10-20


@dataclass(frozen=True)
class Pick:
    index: int  # position in the pool
    score: float  # uncertain/mixed: margin (lower first); novel: distance (higher first); random: 0
    cluster: int | None = None  # mixed: the k-means cluster


def margins(probabilities: np.ndarray) -> np.ndarray:
    """Distance to the nearest decision boundary: ``(p1 - p2) / 2`` of each row's two most
    probable classes (0 = a tie) of an (n, k) matrix; a 1-d array is P(positive) of a
    binary model (``|p - 0.5|``, the same number)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim == 1:
        return np.abs(p - 0.5)
    if p.shape[1] < 2:
        raise ValueError(f"probabilities need at least two classes, got shape {p.shape}")
    if p.shape[1] == 2:  # the binary number exactly as a 1-d P(positive) gives it
        return np.abs(p[:, 1] - 0.5)
    top = np.sort(p, axis=1)[:, -2:]
    return (top[:, 1] - top[:, 0]) / 2


def _order(key: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions sorted by ``key`` ascending, ties in a seeded random order."""
    return np.lexsort((rng.permutation(len(key)), key))


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """Cluster of each row: Lloyd's k-means from a k-means++ start. Fewer clusters when the
    rows hold fewer than ``k`` distinct points (duplicates are not split)."""
    x = np.asarray(x, dtype=np.float64)
    sq = (x * x).sum(axis=1)
    centers = [x[int(rng.integers(len(x)))]]
    d2 = np.maximum(sq - 2 * x @ centers[0] + centers[0] @ centers[0], 0.0)
    while len(centers) < k and d2.sum() > 1e-12:
        c = x[int(rng.choice(len(x), p=d2 / d2.sum()))]
        centers.append(c)
        d2 = np.minimum(d2, np.maximum(sq - 2 * x @ c + c @ c, 0.0))
    c = np.vstack(centers)
    assign = np.full(len(x), -1)
    for _ in range(iterations):
        new = (sq[:, None] - 2 * x @ c.T + (c * c).sum(axis=1)[None, :]).argmin(axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
        for j in range(len(c)):
            members = assign == j
            if members.any():  # an emptied cluster keeps its centre
                c[j] = x[members].mean(axis=0)
    return assign


def _normalised(emb: np.ndarray) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.where(norms == 0, 1.0, norms)


def rank_mixed(embeddings: np.ndarray, margin: np.ndarray, n: int, rng: np.random.Generator) -> list[Pick]:
    """``mixed``: the most uncertain row of each k-means cluster, round-robin."""
    k = max(1, min(n, len(margin), MAX_CLUSTERS))
    assign = kmeans(_normalised(embeddings), k, rng)
    order = _order(margin, rng)  # most uncertain first, over the whole pool
    queues: dict[int, list[int]] = {}
    for i in order:  # each cluster's rows, most uncertain first; clusters by their best row
        queues.setdefault(int(assign[i]), []).append(int(i))
    lists = list(queues.values())
    picks: list[Pick] = []
    depth = 0
    while len(picks) < n and any(depth < len(q) for q in lists):
        for q in lists:
            if depth < len(q) and len(picks) < n:
                picks.append(Pick(q[depth], float(margin[q[depth]]), int(assign[q[depth]])))
        depth += 1
    return picks


def select(
    strategy: Strategy,
    n: int,
    seed: int,
    *,
    probabilities: np.ndarray,
    embeddings: np.ndarray | None = None,
    reference: np.ndarray | None = None,
) -> list[Pick]:
    """The first ``n`` rows of a pool to label by ``strategy`` (fewer when the pool is
    smaller). ``probabilities``: (n, k) class probabilities (1-d: P(positive));
    ``embeddings`` (one row per pool row) for ``novel`` and ``mixed``; ``reference`` (the
    version's reference embeddings) for ``novel``."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    margin = margins(probabilities)
    size = len(margin)
    if size == 0:
        return []
    if strategy is Strategy.RANDOM:
        return [Pick(int(i), 0.0) for i in rng.permutation(size)[:n]]
    if strategy is Strategy.UNCERTAIN:
        return [Pick(int(i), float(margin[i])) for i in _order(margin, rng)[:n]]
    if embeddings is None or len(embeddings) != size:
        raise ValueError(f"{strategy} needs one embedding per pool row")
    if strategy is Strategy.NOVEL:
        if reference is None or len(reference) == 0:
            raise ValueError("novel needs the reference embeddings")
        from sentiment_ops.drift.detectors import nearest_reference_distance

        distance = nearest_reference_distance(reference, embeddings).astype(np.float64)
        return [Pick(int(i), float(distance[i])) for i in _order(-distance, rng)[:n]]
    return rank_mixed(embeddings, margin, n, rng)
