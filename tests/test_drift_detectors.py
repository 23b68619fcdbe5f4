"""The drift detectors on synthetic embeddings with known shifts and fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sentiment_ops.config import DriftSettings
from sentiment_ops.drift import (
    DetectOptions,
    cosine_centroid_distance,
    detect,
    farthest_texts,
    label_mix_test,
    median_bandwidth,
    mmd2_rbf,
    mmd_permutation_test,
    permutation_test,
    squared_distances,
    whiten_pooled,
)


def gaussian(n: int, dim: int = 16, shift: float = 0.0, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)) * scale
    x[:, 0] += shift
    return x.astype(np.float32)


def test_cosine_centroid_distance_known_values() -> None:
    a = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert cosine_centroid_distance(a, a) == pytest.approx(0.0)
    assert cosine_centroid_distance(a, np.array([[0.0, 1.0]])) == pytest.approx(1.0)
    assert cosine_centroid_distance(a, np.array([[-1.0, 0.0]])) == pytest.approx(2.0)


def test_median_bandwidth_is_median_pairwise_distance() -> None:
    pts = np.array([[0.0], [1.0], [3.0]])  # distances 1, 2, 3
    assert median_bandwidth(pts) == pytest.approx(2.0)
    assert median_bandwidth(np.zeros((4, 3))) == 1.0  # degenerate sample: a usable bandwidth


def test_mmd2_unbiased_near_zero_without_shift_and_positive_with_it() -> None:
    x, y = gaussian(300, seed=1), gaussian(300, seed=2)
    null = mmd2_rbf(x, y)
    assert abs(null) < 0.002
    assert mmd2_rbf(x, gaussian(300, shift=1.0, seed=3)) > 0.01 > 5 * abs(null)


def test_permutation_statistic_matches_direct_formula() -> None:
    x, y = gaussian(40, seed=4), gaussian(25, shift=0.5, seed=5)
    pooled = np.vstack([x, y]).astype(np.float64)
    bw = median_bandwidth(pooled, d2=squared_distances(pooled, pooled))
    result = mmd_permutation_test(x, y, permutations=20, seed=0)
    assert result.bandwidth == pytest.approx(bw)
    assert result.mmd2 == pytest.approx(mmd2_rbf(x, y, bw), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("shift", [0.5, 1.0])
def test_shift_is_detected(shift: float) -> None:
    ref, win = gaussian(400, seed=10), gaussian(150, shift=shift, seed=11)
    result = mmd_permutation_test(ref, win, permutations=200, seed=0)
    assert result.p_value == pytest.approx(1 / 201)  # no permutation reaches it: the floor
    assert result.p_value > 0  # +1 correction: never 0


def test_no_shift_is_not_detected() -> None:
    for i in range(5):
        ref, win = gaussian(400, seed=100 + i), gaussian(150, seed=200 + i)
        assert mmd_permutation_test(ref, win, permutations=200, seed=0).p_value > 0.01


def test_p_value_floor_is_one_over_b_plus_one() -> None:
    ref, win = gaussian(50, seed=30), gaussian(50, shift=5.0, seed=31)
    for b in (9, 99):
        assert mmd_permutation_test(ref, win, permutations=b, seed=1).p_value == pytest.approx(1 / (b + 1))


def test_same_seed_same_p_value() -> None:
    ref, win = gaussian(100, seed=40), gaussian(60, shift=0.2, seed=41)
    a = mmd_permutation_test(ref, win, permutations=150, seed=7)
    b = mmd_permutation_test(ref, win, permutations=150, seed=7)
    assert a == b


def test_p_values_roughly_uniform_under_no_shift() -> None:
    """100 null draws: the permutation p-values must look uniform (the test is calibrated),
    so rejections at alpha happen about alpha of the time."""
    p = np.array(
        [
            mmd_permutation_test(
                gaussian(40, dim=8, seed=1000 + i), gaussian(30, dim=8, seed=5000 + i), permutations=199, seed=i
            ).p_value
            for i in range(100)
        ]
    )
    assert (p > 0).all() and (p <= 1).all()
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert (p < 0.05).mean() <= 0.12
    hist, _ = np.histogram(p, bins=5, range=(0, 1))
    assert hist.min() >= 8  # every fifth of [0, 1] gets a share (expected 20)


def test_label_mix() -> None:
    ref = np.array([0, 1] * 500)
    same = label_mix_test(ref, np.array([0, 1] * 100))
    assert same.reference_positive == 0.5 and same.window_positive == 0.5 and same.p_value == pytest.approx(1.0)
    skewed = label_mix_test(ref, np.array([0] * 180 + [1] * 20))
    assert skewed.window_positive == pytest.approx(0.1)
    assert skewed.p_value < 1e-10
    assert label_mix_test(np.zeros(10), np.zeros(5)).p_value == 1.0


def test_farthest_texts_are_the_outliers() -> None:
    ref = gaussian(200, seed=50)
    win = gaussian(10, seed=51)
    win[3] += 20.0
    win[7] += 10.0
    texts = [f"t{i}" for i in range(10)]
    far = farthest_texts(ref, win, texts, k=2, ids=[f"id{i}" for i in range(10)])
    assert [f["text"] for f in far] == ["t3", "t7"]
    assert far[0]["id"] == "id3" and far[0]["distance"] > far[1]["distance"] > 0
    assert farthest_texts(ref, win, texts, k=0) == []
    with pytest.raises(ValueError, match="texts"):
        farthest_texts(ref, win, texts[:3], k=2)


def test_detect_report() -> None:
    ref, win = gaussian(300, seed=60), gaussian(100, shift=1.0, seed=61)
    report = detect(
        ref,
        win,
        ref_labels=np.array([0, 1] * 150),
        win_labels=np.ones(100, dtype=int),
        texts=[str(i) for i in range(100)],
        options=DetectOptions(alpha=0.01, permutations=499, top_k=3),
    )
    d = report.to_dict()
    assert d["drift"] is True and d["test_drift"] is True and d["method"] == "mmd_nn"
    # min-p over two statistics: one at its floor gives about 2 / (B + 1)
    assert d["mmd_p_value"] == pytest.approx(1 / 500) and 1 / 500 <= d["p_value"] <= 3 / 500
    assert d["nn_p_value"] is not None and d["nn_distance2"] > 0 and d["whiten_components"] == 16
    assert d["label_drift"] is True and d["label_mix"]["window_positive"] == 1.0
    assert d["cosine_threshold"] == 0.30 and d["cosine_distance"] == pytest.approx(cosine_centroid_distance(ref, win))
    assert len(d["farthest"]) == 3 and d["n_rows"] == 100 and d["n_reference"] == 300
    # Real embeddings share a large common mean: the centroids stay close in angle.
    seed_rule = detect(ref + 5.0, win + 5.0, options=DetectOptions(method="cosine", permutations=499))
    assert seed_rule.cosine_distance < 0.05
    assert seed_rule.drift is False and seed_rule.test_drift is True  # the fixed threshold misses it
    mmd_only = detect(ref, win, options=DetectOptions(method="mmd", permutations=99, whiten_components=0))
    assert mmd_only.nn_p_value is None and mmd_only.p_value == mmd_only.mmd_p_value and mmd_only.whiten_components == 0
    with pytest.raises(ValueError, match="method"):
        detect(ref, win, options=DetectOptions(method="ks"))


def test_detect_options_of_the_drift_settings() -> None:
    drift = DriftSettings(alpha=0.05, permutations=99, method="mmd", whiten_components=8, top_k=2)
    assert DetectOptions.of(drift, seed=3) == DetectOptions(
        alpha=0.05, permutations=99, cosine_threshold=0.30, method="mmd", whiten_components=8, top_k=2, seed=3
    )


def test_whitening_gives_unit_variance_components() -> None:
    rng = np.random.default_rng(70)
    x = rng.normal(size=(400, 6)) * np.array([50.0, 5.0, 1.0, 1.0, 0.5, 0.1])
    w = whiten_pooled(x, 4)
    assert w.shape == (400, 4)
    np.testing.assert_allclose(np.cov(w, rowvar=False), np.eye(4), atol=1e-8)
    assert whiten_pooled(x, 0) is x
    assert whiten_pooled(x, 99).shape == (400, 6)  # never more components than dimensions
    assert whiten_pooled(np.ones((5, 3)), 2).shape == (5, 3)  # no variance: centred, unchanged shape


def test_nearest_statistic_matches_brute_force() -> None:
    ref, win = gaussian(60, dim=5, seed=80), gaussian(25, dim=5, shift=0.5, seed=81)
    result = permutation_test(ref, win, permutations=30, seed=0)
    expected = squared_distances(win.astype(np.float64), ref.astype(np.float64)).min(axis=1).mean()
    assert result.nn_distance2 == pytest.approx(expected, rel=1e-9)
    # a window larger than the reference (few reference rows among each row's neighbours)
    big = permutation_test(ref[:10], win, permutations=30, seed=0)
    assert big.nn_distance2 == pytest.approx(
        squared_distances(win.astype(np.float64), ref[:10].astype(np.float64)).min(axis=1).mean(), rel=1e-9
    )


def test_small_new_cluster_found_by_nearest_statistic() -> None:
    """5% of the window from a tight far-away cluster, in embeddings whose variance sits on
    one direction (as in a fine-tuned classifier): MMD² on raw embeddings misses it, the
    whitened test with the nearest-reference statistic finds it."""
    rng = np.random.default_rng(90)

    def space(n: int) -> np.ndarray:
        x = rng.normal(size=(n, 20))
        x[:, 0] = rng.choice([-8.0, 8.0], n) + rng.normal(size=n)  # the dominant "sentiment" axis
        return x

    ref = space(600)
    win = space(300)
    win[:15, 1:] += 3.0  # a new cluster in the minor directions
    raw = mmd_permutation_test(ref, win, permutations=199, seed=0)
    test = permutation_test(ref, win, permutations=199, seed=0, whiten=20)
    assert raw.p_value > 0.05
    assert test.nn_p_value == pytest.approx(1 / 200) and test.p_value < 0.01


def test_aggregate_p_values_roughly_uniform_under_no_shift() -> None:
    p = np.array(
        [
            permutation_test(
                gaussian(40, dim=6, seed=2000 + i),
                gaussian(30, dim=6, seed=6000 + i),
                permutations=199,
                seed=i,
                whiten=4,
            ).p_value
            for i in range(100)
        ]
    )
    assert (p > 0).all() and (p <= 1).all()
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert (p < 0.05).mean() <= 0.12


def test_dimension_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="dimension"):
        mmd_permutation_test(gaussian(10, dim=4), gaussian(10, dim=5), permutations=5)
