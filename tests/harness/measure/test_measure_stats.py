"""Latency statistics and the Mann-Whitney U screen, against numpy and scipy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.measure.stats import (
    LatencyStats,
    mann_whitney_u,
    median_ci_ranks,
    summarize,
)


def test_one_to_hundred_matches_numpy() -> None:
    x = [float(v) for v in range(1, 101)]
    s = summarize(x)
    assert s.n == 100
    assert s.min == 1.0
    assert s.median == 50.5
    assert s.mean == 50.5
    assert s.std == pytest.approx(np.std(x, ddof=1))
    assert s.p90 == pytest.approx(90.1)  # numpy's linear interpolation
    assert s.p99 == pytest.approx(99.01)
    assert s.cv == pytest.approx(np.std(x, ddof=1) / 50.5)
    # n = 100: ranks 40 and 61 (coverage 0.9648; ranks 41/60 would give 0.9431).
    assert s.ci95 == (40.0, 61.0)


def test_skewed_sample_matches_numpy() -> None:
    rng = np.random.default_rng(7)
    x = rng.lognormal(mean=1.0, sigma=0.8, size=257)
    s = summarize(list(x))
    assert s.min == pytest.approx(x.min())
    assert s.median == pytest.approx(np.median(x))
    assert s.mean == pytest.approx(np.mean(x))
    assert s.std == pytest.approx(np.std(x, ddof=1))
    assert s.p90 == pytest.approx(np.percentile(x, 90))
    assert s.p99 == pytest.approx(np.percentile(x, 99))
    assert s.cv == pytest.approx(np.std(x, ddof=1) / np.mean(x))
    lo, hi = s.ci95
    assert lo <= s.median <= hi
    # Skewed to the right: the mean sits above the median.
    assert s.mean > s.median


def test_single_sample() -> None:
    s = summarize([3.5])
    assert (s.min, s.median, s.mean, s.std, s.p90, s.p99, s.cv, s.n) == (
        3.5,
        3.5,
        3.5,
        0.0,
        3.5,
        3.5,
        0.0,
        1,
    )
    assert s.ci95 == (3.5, 3.5)


def test_small_samples_ci_is_min_max() -> None:
    for n in range(1, 8):
        x = [float(v) for v in range(10, 10 + n)]
        assert summarize(x[::-1]).ci95 == (10.0, 10.0 + n - 1)


def test_to_dict_is_json_with_exact_keys() -> None:
    d = summarize([1.0, 2.0, 4.0]).to_dict()
    assert list(d) == ["min", "median", "mean", "std", "p90", "p99", "cv", "ci95", "n"]
    assert d["ci95"] == [1.0, 4.0]
    assert d["n"] == 3
    assert json.loads(json.dumps(d)) == d


def test_dataclass_is_frozen() -> None:
    s = summarize([1.0, 2.0])
    assert isinstance(s, LatencyStats)
    with pytest.raises(AttributeError):
        s.median = 0.0  # type: ignore[misc]


def test_empty_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        summarize([])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_names_index(bad: float) -> None:
    with pytest.raises(ValueError, match=r"samples_ms\[2\]"):
        summarize([1.0, 2.0, bad, 4.0])


def test_ci_ranks_are_the_narrowest_symmetric_with_95_percent() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    for n in [*range(6, 120), 499, 1000, 2000, 2001, 4999, 20000]:
        j, k = median_ci_ranks(n)
        assert k == n + 1 - j
        coverage = 1.0 - 2.0 * scipy_stats.binom.cdf(j - 1, n, 0.5)
        narrower = 1.0 - 2.0 * scipy_stats.binom.cdf(j, n, 0.5)
        assert coverage >= 0.95, n
        assert narrower < 0.95, n


def test_ci_coverage_by_simulation() -> None:
    # Exponential(1): the true median is ln 2. 2000 samples of n = 30.
    rng = np.random.default_rng(2024)
    true_median = math.log(2.0)
    draws = rng.exponential(1.0, size=(2000, 30))
    covered = 0
    for row in draws:
        lo, hi = summarize(list(row)).ci95
        covered += lo <= true_median <= hi
    coverage = covered / len(draws)
    assert 0.93 <= coverage <= 0.99, coverage


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (list(range(30)), [v + 5.5 for v in range(25)]),
        ([1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 7.0] * 4, [2.0, 3.0, 3.0, 4.0, 5.0, 5.0] * 5),
        (
            list(np.random.default_rng(1).normal(10, 1, 40)),
            list(np.random.default_rng(2).normal(10.4, 1, 50)),
        ),
        ([5.0] * 10, [5.0] * 12),
    ],
)
def test_mann_whitney_matches_scipy(a: list[float], b: list[float]) -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    u, p = mann_whitney_u(a, b)
    ref = scipy_stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic")
    assert u == pytest.approx(ref.statistic)
    if math.isnan(ref.pvalue):  # all tied: scipy gives up, we say "no evidence"
        assert p == 1.0
    else:
        assert p == pytest.approx(ref.pvalue, rel=1e-9)


def test_mann_whitney_without_continuity_matches_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    a = [1.0, 4.0, 4.0, 6.0, 9.0, 11.0, 12.0]
    b = [2.0, 3.0, 4.0, 5.0, 5.0, 7.0, 8.0, 8.0]
    u, p = mann_whitney_u(a, b, continuity=False)
    ref = scipy_stats.mannwhitneyu(
        a, b, alternative="two-sided", method="asymptotic", use_continuity=False
    )
    assert u == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


def test_mann_whitney_detects_a_shift() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(10.0, 0.2, 60)
    slower = rng.normal(10.5, 0.2, 60)
    u, p = mann_whitney_u(slower, base)
    assert p < 1e-6
    assert u > 60 * 60 / 2  # the first sample is the larger one
    _, p_same = mann_whitney_u(base[:30], base[30:])
    assert p_same > 0.01


def test_mann_whitney_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        mann_whitney_u([], [1.0])
    with pytest.raises(ValueError, match=r"b\[1\]"):
        mann_whitney_u([1.0], [1.0, math.nan])
