"""Latency statistics over raw samples, and the Mann-Whitney U screen for regressions.

Everything here is computed from the raw samples (which the farm keeps), so a summary can be
recomputed later with other choices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import JsonValue, TypeAdapter

CI_LEVEL = 0.95
# Below this many samples no pair of order statistics covers the median with 95%:
# P(min <= median <= max) = 1 - 2 / 2**n, which is 0.9375 for n = 5 and 0.96875 for n = 6.
MIN_SAMPLES_FOR_CI = 6
# Exact integer binomial sums up to here; above, a float sum in log space (the ranks it picks
# only differ from the exact ones if the coverage lands within ~1e-12 of the level).
_EXACT_BINOMIAL_MAX_N = 2000

Samples = Sequence[float] | npt.NDArray[np.floating[Any] | np.integer[Any]]
"""A flat sequence of numbers: a list, or a 1-D numpy array."""


@dataclass(frozen=True)
class LatencyStats:
    """Summary of latency samples, in the unit of the samples (milliseconds)."""

    min: float
    median: float
    mean: float
    std: float
    p90: float
    p99: float
    cv: float
    ci95: tuple[float, float]
    n: int

    def to_dict(self) -> dict[str, JsonValue]:
        """The JSON form (a result document's ``latency_ms``)."""
        dumped: dict[str, JsonValue] = _STATS.dump_python(self, mode="json")
        return dumped


_STATS = TypeAdapter(LatencyStats)


class MannWhitneyResult(NamedTuple):
    """``u`` is the U statistic of the first sample; ``p_two_sided`` its two-sided p-value."""

    u: float
    p_two_sided: float


def _as_finite_array(samples: Samples, what: str) -> npt.NDArray[np.float64]:
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{what} must be a flat sequence of numbers, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{what} is empty")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{what}[{i}] is not finite ({x[i]!r})")
    return x


def median_ci_ranks(n: int, level: float = CI_LEVEL) -> tuple[int, int]:
    """1-based ranks ``(j, k)`` of order statistics that bound the median with ``level``.

    Distribution-free: the number B of samples below the true median is Bin(n, 1/2), so
    ``[x_(j), x_(k)]`` with ``k = n + 1 - j`` covers it with probability
    ``P(j <= B <= n - j) = 1 - 2 P(B <= j - 1)``. The largest such ``j`` whose coverage is
    still at least ``level`` gives the narrowest symmetric interval. When even ``(1, n)``
    falls short (n < 6 for 95%), ``(1, n)`` is returned all the same.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    alpha = 1.0 - level
    j = _exact_lower_rank(n, alpha) if n <= _EXACT_BINOMIAL_MAX_N else _float_lower_rank(n, alpha)
    j = min(j, (n + 1) // 2)
    return j, n + 1 - j


def _exact_lower_rank(n: int, alpha: float) -> int:
    """Largest j >= 1 with 2 * P(B <= j - 1) <= alpha (or 1), in integer arithmetic."""
    # Compare 2 * cdf * 1e12 with alpha * 1e12 * 2**n, so no rounding decides it.
    scale = 10**12
    limit = round(alpha * scale) * (1 << n)
    j = 1
    cdf = 0
    c = 1  # C(n, i)
    for i in range(n // 2 + 1):  # i runs over j - 1
        cdf += c
        if 2 * cdf * scale > limit:
            break
        j = i + 1
        c = c * (n - i) // (i + 1)
    return j


def _float_lower_rank(n: int, alpha: float) -> int:
    """As :func:`_exact_lower_rank`, summing the binomial pmf in log space."""
    i = np.arange(n // 2, dtype=np.float64)
    log_c = np.concatenate((np.zeros(1), np.cumsum(np.log((n - i) / (i + 1.0)))))
    cdf = np.cumsum(np.exp(log_c - n * math.log(2.0)))
    ok = np.flatnonzero(2.0 * cdf <= alpha)
    return int(ok[-1]) + 1 if ok.size else 1


def summarize(samples_ms: Samples) -> LatencyStats:
    """Summarize latency samples (ms).

    ``std`` is the sample standard deviation (ddof=1; 0 for a single sample), ``p90`` and
    ``p99`` use numpy's default linear interpolation, ``cv`` is ``std / mean`` (0 when all
    samples are 0). ``ci95`` is a distribution-free 95% confidence interval of the median
    from order statistics (see :func:`median_ci_ranks`); for fewer than 6 samples no such
    interval reaches 95%, and ``(min, max)`` is returned: read it as "too few samples".

    Raises ValueError on an empty input or on a non-finite sample (naming its index).
    """
    x = _as_finite_array(samples_ms, "samples_ms")
    n = int(x.size)
    s = np.sort(x)
    mean = float(np.mean(s))
    std = float(np.std(s, ddof=1)) if n > 1 else 0.0
    # All-zero samples vary not at all; a zero mean with spread has no finite cv.
    cv = std / mean if mean != 0.0 else (0.0 if std == 0.0 else math.inf)
    if n < MIN_SAMPLES_FOR_CI:
        ci = (float(s[0]), float(s[-1]))
    else:
        j, k = median_ci_ranks(n)
        ci = (float(s[j - 1]), float(s[k - 1]))
    p90, p99 = (float(v) for v in np.percentile(s, [90.0, 99.0]))
    return LatencyStats(
        min=float(s[0]),
        median=float(np.median(s)),
        mean=mean,
        std=std,
        p90=p90,
        p99=p99,
        cv=cv,
        ci95=ci,
        n=n,
    )


def _average_ranks(x: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], list[int]]:
    """1-based ranks with ties averaged, and the sizes of the tie groups (size > 1 only)."""
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    # Starts of runs of equal values in the sorted array.
    starts = np.flatnonzero(np.concatenate(([True], sx[1:] != sx[:-1])))
    ends = np.concatenate((starts[1:], [sx.size]))
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks_sorted = np.repeat(avg, ends - starts)
    ranks = np.empty_like(ranks_sorted)
    ranks[order] = ranks_sorted
    sizes = (ends - starts)[ends - starts > 1]
    return ranks, [int(t) for t in sizes]


def mann_whitney_u(a: Samples, b: Samples, *, continuity: bool = True) -> MannWhitneyResult:
    """Mann-Whitney U test of ``a`` against ``b``, normal approximation with tie correction.

    Returns ``(u, p_two_sided)`` where ``u`` is the U statistic of ``a`` (the number of pairs
    with ``a_i > b_j``, ties counting one half). With ``continuity`` (the default) a 0.5
    continuity correction is applied, as scipy's ``mannwhitneyu(..., method="asymptotic")``
    does. The approximation is meant for the sample sizes of benchmark runs (tens and up);
    when every value is tied there is no evidence either way and p is 1.
    """
    x = _as_finite_array(a, "a")
    y = _as_finite_array(b, "b")
    n1, n2 = int(x.size), int(y.size)
    n = n1 + n2
    ranks, ties = _average_ranks(np.concatenate((x, y)))
    u1 = float(np.sum(ranks[:n1])) - n1 * (n1 + 1) / 2.0
    u2 = n1 * n2 - u1
    mu = n1 * n2 / 2.0
    tie_term = float(sum(t**3 - t for t in ties))
    var = n1 * n2 / 12.0 * ((n + 1) - (tie_term / (n * (n - 1)) if n > 1 else 0.0))
    if var <= 0.0:
        return MannWhitneyResult(u1, 1.0)
    numerator = max(u1, u2) - mu
    if continuity:
        numerator -= 0.5
    z = numerator / math.sqrt(var)
    p = min(1.0, math.erfc(z / math.sqrt(2.0)))  # 2 * (1 - Phi(z))
    return MannWhitneyResult(u1, p)
