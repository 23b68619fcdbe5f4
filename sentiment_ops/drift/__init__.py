"""Drift monitoring in one package.

- ``detectors`` and ``two_sample``: the statistics (pure numpy), re-exported here.
- ``reference``: a model version's reference embeddings, embedded as the server embeds.
- ``check``: one check of served traffic against the reference.
- ``history``: the record of checks (inference store, MLflow monitoring run, plot).

Importing this package loads numpy only; ``reference`` and ``check`` load the model stack."""

from sentiment_ops.drift.detectors import (
    METHODS,
    DetectOptions,
    DriftReport,
    LabelMix,
    cosine_centroid_distance,
    detect,
    farthest_texts,
    label_mix_test,
    nearest_reference_distance,
)
from sentiment_ops.drift.two_sample import (
    MMDResult,
    PermutationResult,
    median_bandwidth,
    mmd2_rbf,
    mmd_permutation_test,
    permutation_test,
    rbf_kernel,
    squared_distances,
    whiten_pooled,
)

__all__ = [
    "METHODS",
    "DetectOptions",
    "DriftReport",
    "LabelMix",
    "MMDResult",
    "PermutationResult",
    "cosine_centroid_distance",
    "detect",
    "farthest_texts",
    "label_mix_test",
    "median_bandwidth",
    "mmd2_rbf",
    "mmd_permutation_test",
    "nearest_reference_distance",
    "permutation_test",
    "rbf_kernel",
    "squared_distances",
    "whiten_pooled",
]
