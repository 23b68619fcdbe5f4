"""The calibrated drift test and the repeated mode, measured (used by drift_benchmark.py).

Inputs are embedded pools (``emb``, ``pred``, ``labels`` arrays):

* ``reference`` / ``calibration``: the deployed reference and its calibration set, drawn
  exactly as ``sentops train`` draws them (``reference.build_reference``),
* ``imdb``: held-out IMDB texts in neither (nor in the model's training sample): the
  unshifted windows are drawn from it at random, a text at most once per window,
* ``held_out``: every embedded held-out IMDB text, for other reference draws (reference,
  calibration set and window pool re-drawn, disjoint, from it),
* ``tweets`` / ``rotten_tomatoes``: the shifts.
"""

from __future__ import annotations

import math
import time
from statistics import NormalDist
from typing import Any

import numpy as np

from sentiment_ops.drift import cosine_centroid_distance, monitor, permutation_test
from sentiment_ops.drift.calibrated import CalibratedTest

SHIFTS = ("imdb_90_negative", "imdb_5_tweets", "imdb_10_tweets", "imdb_50_tweets", "rotten_tomatoes", "tweets")
QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5)


def binomial_interval(rate: float, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The central interval of the observed rate when the true rate is ``rate``: the
    smallest and largest k/trials with binomial tail probabilities ≥ (1 - level)/2."""
    tail = (1 - level) / 2
    pmf = [math.comb(trials, k) * rate**k * (1 - rate) ** (trials - k) for k in range(trials + 1)]
    cdf = np.cumsum(pmf)
    lo = int(np.searchsorted(cdf, tail))  # smallest k with P(X ≤ k) ≥ tail
    hi = int(np.searchsorted(cdf, 1 - tail))  # smallest k with P(X ≤ k) ≥ 1 - tail
    return lo / trials, hi / trials


def mixed_window(
    scenario: str, size: int, rng: np.random.Generator, pools: dict[str, Any], keys: tuple[str, ...] = ("emb", "pred")
) -> tuple[Any, ...]:
    """One window of ``scenario``: the pools' ``keys`` arrays (embeddings and predicted
    labels, or per-text ``scores``) of the texts drawn, a text at most once."""
    imdb = pools["imdb"]

    def take(pool: dict[str, Any], idx: np.ndarray) -> list[np.ndarray]:
        return [pool[k][idx] for k in keys]

    def pick(pool: dict[str, Any], n: int) -> np.ndarray:
        return rng.choice(len(pool["labels"]), n, replace=False)

    if scenario == "imdb":
        return tuple(take(imdb, pick(imdb, size)))
    if scenario == "imdb_90_negative":
        neg, pos = np.flatnonzero(imdb["labels"] == 0), np.flatnonzero(imdb["labels"] == 1)
        k = round(size * 0.9)
        idx = np.concatenate([rng.choice(neg, k, replace=False), rng.choice(pos, size - k, replace=False)])
        return tuple(take(imdb, idx))
    if scenario.endswith("_tweets"):
        k = round(size * int(scenario.split("_")[1]) / 100)
        a, b = take(imdb, pick(imdb, size - k)), take(pools["tweets"], pick(pools["tweets"], k))
        return tuple(np.concatenate([x, y]) for x, y in zip(a, b, strict=True))
    pool = pools[scenario]
    return tuple(take(pool, pick(pool, min(size, len(pool["labels"])))))


def with_scores(test: CalibratedTest, pools: dict[str, Any]) -> dict[str, Any]:
    """The pools with each text's scores against the test's reference (computed once:
    a window's test then only averages them)."""
    return {name: {**pool, "scores": test.scorer.scores(pool["emb"], pool["pred"])} for name, pool in pools.items()}


def window_p(test: CalibratedTest, scenario: str, size: int, rng: np.random.Generator, pools: dict[str, Any]) -> float:
    return test.test_scores(mixed_window(scenario, size, rng, pools, ("scores",))[0]).p_value


def null_summary(p: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"windows": len(p)}
    for alpha in (0.01, 0.05):
        lo, hi = binomial_interval(alpha, len(p))
        rate = float(np.mean(p < alpha))
        out[f"false_alarm_rate_{alpha}"] = round(rate, 4)
        out[f"binomial_95_interval_{alpha}"] = [round(lo, 4), round(hi, 4)]
        out[f"inside_{alpha}"] = lo <= rate <= hi
    out["p_value_quantiles"] = {str(q): round(float(np.quantile(p, q)), 4) for q in QUANTILES}
    return out


def calibrated_size(
    test: CalibratedTest, pools: dict[str, Any], size: int, null_windows: int, shifted_windows: int, seed: int
) -> dict[str, Any]:
    """False alarms over ``null_windows`` unshifted windows, detection per shift."""
    rng = np.random.default_rng(seed)
    seconds: list[float] = []
    for _ in range(5):  # the whole test of a window, scoring included
        emb, pred = mixed_window("imdb", size, rng, pools)
        t0 = time.perf_counter()
        test.test(emb, pred)
        seconds.append(time.perf_counter() - t0)
    p = np.array([window_p(test, "imdb", size, rng, pools) for _ in range(null_windows)])
    out = null_summary(p)
    out["detection_rate_0.01"] = {}
    for shift in SHIFTS:
        found = [window_p(test, shift, size, rng, pools) < 0.01 for _ in range(shifted_windows)]
        out["detection_rate_0.01"][shift] = round(float(np.mean(found)), 4)
    out["seconds_per_test"] = round(float(np.median(seconds)), 4)
    return out


def redraw(held_out: dict[str, Any], n_ref: int, n_cal: int, seed: int) -> tuple[dict[str, Any], ...]:
    """Another reference draw: reference, calibration set and window pool, disjoint."""
    order = np.random.default_rng(seed).permutation(len(held_out["emb"]))
    parts = (order[:n_ref], order[n_ref : n_ref + n_cal], order[n_ref + n_cal :])
    return tuple({k: held_out[k][idx] for k in ("emb", "pred", "labels")} for idx in parts)


def other_references(
    held_out: dict[str, Any], pools: dict[str, Any], n_ref: int, n_cal: int, draws: int, windows: int, components: int
) -> list[dict[str, Any]]:
    """At window 500: the calibrated test for ``draws`` other reference draws."""
    out = []
    for d in range(draws):
        ref, cal, pool = redraw(held_out, n_ref, n_cal, 100 + d)
        test = CalibratedTest.fit(ref["emb"], cal["emb"], cal["pred"], components)
        rng = np.random.default_rng(200 + d)
        p = np.array(
            [test.test(*mixed_window("imdb", 500, rng, {**pools, "imdb": pool})).p_value for _ in range(windows)]
        )
        out.append({"draw_seed": 100 + d, "window_pool": len(pool["emb"]), **null_summary(p)})
    return out


def permutation_root_cause(
    held_out: dict[str, Any], n_ref: int, draws: int, windows: int, whiten: int, permutations: int
) -> dict[str, Any]:
    """The permutation test (mmd_nn) against ``draws`` fixed references, windows of 500 from
    the rest: each reference's own false-alarm rate, and all of them pooled."""
    per_ref = []
    pooled: list[float] = []
    for d in range(draws):
        ref, _, pool = redraw(held_out, n_ref, 0, 300 + d)
        rng = np.random.default_rng(400 + d)
        p = []
        for _ in range(windows):
            idx = rng.choice(len(pool["emb"]), 500, replace=False)
            p.append(permutation_test(ref["emb"], pool["emb"][idx], permutations, 0, whiten=whiten).p_value)
        per_ref.append(round(float(np.mean(np.array(p) < 0.05)), 3))
        pooled += p
    arr = np.array(pooled)
    return {
        "whiten_components": whiten,
        "references": draws,
        "windows_per_reference": windows,
        "false_alarm_rate_0.05_per_reference": per_ref,
        "pooled_false_alarm_rate_0.05": round(float(np.mean(arr < 0.05)), 4),
        "pooled_false_alarm_rate_0.01": round(float(np.mean(arr < 0.01)), 4),
        "pooled_p_value_quantiles": {str(q): round(float(np.quantile(arr, q)), 4) for q in QUANTILES},
    }


def stream_false_alarms(
    test: CalibratedTest, pools: dict[str, Any], checks: int, size: int, h: float
) -> dict[str, Any]:
    """Consecutive windows of unshifted traffic, one check each: the CUSUM's alarms."""
    rng = np.random.default_rng(11)
    s, alarms, lengths, since = 0.0, 0, [], 0
    for _ in range(checks):
        u = monitor.normal_score(window_p(test, "imdb", size, rng, pools))
        s = max(0.0, s + u - monitor.CUSUM_K)
        since += 1
        if s >= h:
            alarms += 1
            lengths.append(since)
            s, since = 0.0, 0
    return {
        "checks": checks,
        "false_alarms": alarms,
        "expected_checks_between_false_alarms": round(checks / alarms, 1) if alarms else f">{checks}",
        "run_lengths": lengths,
    }


def detection_delays(
    test: CalibratedTest, ref: np.ndarray, pools: dict[str, Any], onsets: int, size: int, h: float, cap: int
) -> dict[str, dict[str, Any]]:
    """Checks from a shift's onset to the first alarm, per rule (the CUSUM starts from its
    unshifted state: 20 unshifted checks first; delays past ``cap`` are censored)."""
    rng = np.random.default_rng(13)
    cos_cut = 0.30
    out: dict[str, dict[str, Any]] = {}
    for shift in SHIFTS[1:] + SHIFTS[:1]:
        rules: dict[str, list[int]] = {"repeated": [], "seed_cosine": [], "plain_mmd": []}
        for o in range(onsets):
            s = 0.0
            for _ in range(20):
                s = max(0.0, s + monitor.normal_score(window_p(test, "imdb", size, rng, pools)) - monitor.CUSUM_K)
                s = 0.0 if s >= h else s
            hit = {k: cap + 1 for k in rules}
            for t in range(1, cap + 1):
                emb, scores = mixed_window(shift, size, rng, pools, ("emb", "scores"))
                if hit["repeated"] > cap:
                    s = max(0.0, s + monitor.normal_score(test.test_scores(scores).p_value) - monitor.CUSUM_K)
                    hit["repeated"] = t if s >= h else hit["repeated"]
                if hit["seed_cosine"] > cap and cosine_centroid_distance(ref, emb) > cos_cut:
                    hit["seed_cosine"] = t
                if o < onsets // 4 and hit["plain_mmd"] > cap:  # slow: a quarter of the onsets
                    if permutation_test(ref, emb, 500, 0, whiten=0, nearest=False).p_value < 0.01:
                        hit["plain_mmd"] = t
                if all(v <= cap for k, v in hit.items() if k != "plain_mmd" or o < onsets // 4):
                    break
            for k, v in hit.items():
                if k != "plain_mmd" or o < onsets // 4:
                    rules[k].append(v)
        out[shift] = {
            k: {
                "median_delay_checks": float(np.median(v)) if np.median(v) <= cap else f">{cap}",
                "flagged_within_cap": round(float(np.mean(np.array(v) <= cap)), 3),
                "onsets": len(v),
            }
            for k, v in rules.items()
        }
    return out


def z_quantile(alpha: float) -> float:
    return NormalDist().inv_cdf(1 - alpha)


def calibration_size_effect(
    held_out: dict[str, Any], n_ref: int, sizes: tuple[int, ...], draws: int, windows: int, components: int
) -> dict[str, Any]:
    """How far one deployment's false-alarm rate strays from alpha, by calibration-set size
    N: ``draws`` reference draws per N (reference, calibration set and window pool re-drawn,
    disjoint), ``windows`` windows of 500 each; the spread of the per-draw rates against the
    predicted offset of the quadratic statistic, ``(n/N + n/pool) / sqrt(1 + 2 (n/N + n/pool))``
    standard errors (a mean-of-one-score test's would be ``sqrt(n/N + n/pool)``)."""
    out: dict[str, Any] = {}
    for n_cal in sizes:
        rates: dict[str, list[float]] = {"0.01": [], "0.05": []}
        for d in range(draws):
            ref, cal, pool = redraw(held_out, n_ref, n_cal, 500 + d)
            test = CalibratedTest.fit(ref["emb"], cal["emb"], cal["pred"], components)
            scored = with_scores(test, {"imdb": pool})
            rng = np.random.default_rng(600 + d)
            p = np.array([window_p(test, "imdb", 500, rng, scored) for _ in range(windows)])
            for a, per_draw in rates.items():
                per_draw.append(round(float(np.mean(p < float(a))), 4))
        pool_n = len(held_out["emb"]) - n_ref - n_cal
        ratio = 500 / n_cal + 500 / pool_n
        out[str(n_cal)] = {
            "draws": draws,
            "windows_per_draw": windows,
            "false_alarm_rate_0.01_per_draw": rates["0.01"],
            "false_alarm_rate_0.05_per_draw": rates["0.05"],
            "mean_0.05": round(float(np.mean(rates["0.05"])), 4),
            "offset_sd_predicted_z": round(ratio / math.sqrt(1 + 2 * ratio), 3),
        }
    return out
