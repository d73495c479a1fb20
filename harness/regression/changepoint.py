"""Change points in a series of nightly values: E-divisive means with a significance test.

The method is the one Apache Otava (formerly Hunter, MongoDB's lineage) uses for performance
series: a split is proposed where the energy statistic of Székely and Rizzo between the two
sides is largest (Matteson and James' E-divisive, alpha = 1), and kept only if the two sides
differ significantly by a Student t-test; the sides are split again recursively, and at the end
every change point is tested again against its neighbours' segments, the weakest dropped first,
until all that remain are significant. A change point must also be large: its ratio of the
after to the before level must move by at least ``min_effect``.

Neither ``apache-otava`` nor ``signal-processing-algorithms`` can be installed beside the
farm's stack (the first pins numpy 2.2.0 and scipy < 1.17 and brings BigQuery, Slack and
Graphite clients; the second needs numpy < 2 and gevent), so the method is written here, on
numpy and scipy.

Latencies, memory and load times are positive and vary multiplicatively, so the test runs on
their logarithms: the ratio after/before and its confidence interval come out directly. A
series with zeros or negatives (an accuracy error) is tested as it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class DetectorSettings:
    """How sure and how large a change must be. Defaults: see bench/regression.py's figures
    in the README (chosen there from the farm's own measured noise)."""

    max_pvalue: float = 0.001
    min_effect: float = 0.02  # relative change of the level, 0.02 = 2%
    min_segment: int = 1  # nights on each side of a change (1: the newest night can be one)
    confidence: float = 0.95  # of the ratio's interval

    def __post_init__(self) -> None:
        if not 0.0 < self.max_pvalue < 1.0:
            raise ValueError(f"max_pvalue must be in (0, 1), not {self.max_pvalue}")
        if self.min_effect < 0.0:
            raise ValueError(f"min_effect must be >= 0, not {self.min_effect}")
        if self.min_segment < 1:
            raise ValueError(f"min_segment must be >= 1, not {self.min_segment}")


@dataclass(frozen=True)
class ChangePoint:
    """The series changed level at ``index``: values[index] is the first of the new level."""

    index: int
    before: float  # level of the segment before (geometric mean for a positive series)
    after: float
    ratio: float  # after / before
    ratio_low: float  # the ratio's confidence interval
    ratio_high: float
    pvalue: float

    @property
    def direction(self) -> str:
        return "up" if self.ratio > 1.0 else "down"


def change_points(
    values: Sequence[float], settings: DetectorSettings | None = None
) -> list[ChangePoint]:
    """Every significant, large enough change of level in ``values`` (oldest first), in order."""
    settings = settings or DetectorSettings()
    raw = np.asarray(values, dtype=float)
    if raw.ndim != 1 or not np.all(np.isfinite(raw)):
        raise ValueError("values must be a flat sequence of finite numbers")
    logged = bool(raw.size) and bool(np.all(raw > 0.0))
    x = np.log(raw) if logged else raw
    if x.size < max(3, 2 * settings.min_segment):
        return []

    splits = _divide(x, settings)
    splits = _prune(x, splits, settings)
    found = []
    bounds = [0, *splits, x.size]
    for k, index in enumerate(splits):
        point = _test(x[bounds[k] : index], x[index : bounds[k + 2]], settings, logged)
        if point is not None:
            found.append(replace(point, index=index))
    return found


def _divide(x: np.ndarray, settings: DetectorSettings) -> list[int]:
    """Recursive bisection at the energy statistic's maximum while the split is significant."""
    found: list[int] = []
    pending = [(0, x.size)]
    while pending:
        start, end = pending.pop()
        index = _best_split(x[start:end], settings.min_segment)
        if index is None:
            continue
        left, right = x[start : start + index], x[start + index : end]
        if _pvalue(left, right) > settings.max_pvalue:
            continue
        found.append(start + index)
        pending += [(start, start + index), (start + index, end)]
    return sorted(found)


def _split_pvalues(x: np.ndarray, splits: list[int]) -> list[float]:
    """Each change point's p-value against the segments of its neighbours."""
    bounds = [0, *splits, x.size]
    return [
        _pvalue(x[bounds[k] : bounds[k + 1]], x[bounds[k + 1] : bounds[k + 2]])
        for k in range(len(splits))
    ]


def _prune(x: np.ndarray, splits: list[int], settings: DetectorSettings) -> list[int]:
    """Test each change point against the segments of its neighbours; while one fails, drop
    the change point whose removal leaves the others most significant (the smallest largest
    p-value; of equals, the weakest), and again, until every one left is significant. A split
    found early may not be significant once the others are known. Dropping the weakest alone
    is not enough: a one-night blip just before a real change is a split of its own, which
    leaves the real change one night to compare with, and the real change is then the weakest
    (a 30x slowdown after a noisy night was missed so)."""
    splits = list(splits)
    while splits:
        pvalues = _split_pvalues(x, splits)
        if max(pvalues) <= settings.max_pvalue:
            break

        left_after = [
            (max(_split_pvalues(x, splits[:i] + splits[i + 1 :]), default=0.0), -pvalues[i])
            for i in range(len(splits))
        ]
        del splits[left_after.index(min(left_after))]
    return splits


def _best_split(x: np.ndarray, min_segment: int) -> int | None:
    """Where the divergence between the two sides, weighted by their sizes, is largest: the
    E-divisive statistic Q(tau) = m n / (m + n) * E(left, right), E the energy distance with
    alpha = 1, computed for every tau from one matrix of block sums."""
    n = x.size
    if n < 2 * min_segment or n < 3:
        return None
    distances = np.abs(x[:, None] - x[None, :])
    blocks = np.zeros((n + 1, n + 1))
    blocks[1:, 1:] = distances.cumsum(axis=0).cumsum(axis=1)

    def block(r0: int, r1: int, c0: int, c1: int) -> float:
        return float(blocks[r1, c1] - blocks[r0, c1] - blocks[r1, c0] + blocks[r0, c0])

    best, best_q = None, 0.0
    for tau in range(min_segment, n - min_segment + 1):
        m, k = tau, n - tau
        between = 2.0 * block(0, m, m, n) / (m * k)
        within_left = block(0, m, 0, m) / (m * (m - 1)) if m > 1 else 0.0
        within_right = block(m, n, m, n) / (k * (k - 1)) if k > 1 else 0.0
        q = m * k / n * (between - within_left - within_right)
        if q > best_q:
            best, best_q = tau, q
    return best


def _pvalue(left: np.ndarray, right: np.ndarray) -> float:
    """Student's two-sample t-test (pooled variance, so one night on a side is testable)."""
    from scipy import stats  # here: at the top it would be a second of every API start

    if left.size + right.size < 3:
        return 1.0
    pooled = _pooled_sd(left, right)
    diff = float(right.mean() - left.mean())
    if pooled == 0.0:
        return 0.0 if diff != 0.0 else 1.0
    t = diff / (pooled * math.sqrt(1.0 / left.size + 1.0 / right.size))
    dof = left.size + right.size - 2
    return float(2.0 * stats.t.sf(abs(t), dof))


def _pooled_sd(left: np.ndarray, right: np.ndarray) -> float:
    dof = left.size + right.size - 2
    squares = float(((left - left.mean()) ** 2).sum() + ((right - right.mean()) ** 2).sum())
    return math.sqrt(squares / dof) if dof > 0 else 0.0


def _test(
    left: np.ndarray, right: np.ndarray, settings: DetectorSettings, logged: bool
) -> ChangePoint | None:
    """The change from ``left`` to ``right`` as a ChangePoint, or None if it is not
    significant or smaller than ``min_effect``."""
    from scipy import stats  # here: at the top it would be a second of every API start

    pvalue = _pvalue(left, right)
    if pvalue > settings.max_pvalue:
        return None
    diff = float(right.mean() - left.mean())
    dof = left.size + right.size - 2
    half = (
        float(stats.t.ppf(0.5 + settings.confidence / 2.0, dof))
        * _pooled_sd(left, right)
        * math.sqrt(1.0 / left.size + 1.0 / right.size)
        if dof > 0
        else math.inf
    )
    if logged:
        before, after = math.exp(left.mean()), math.exp(right.mean())
        ratio, low, high = math.exp(diff), math.exp(diff - half), math.exp(diff + half)
    else:
        before, after = float(left.mean()), float(right.mean())
        ratio = after / before if before else math.inf
        low = (after - half) / before if before else -math.inf
        high = (after + half) / before if before else math.inf
    if abs(ratio - 1.0) < settings.min_effect:
        return None
    return ChangePoint(0, before, after, ratio, low, high, pvalue)


def recent_changes(
    values: Sequence[float], settings: DetectorSettings | None = None, *, recent: int = 2
) -> list[ChangePoint]:
    """The change points of ``values`` that start within its last ``recent`` values: what a
    night raises (the farm's analysis and bench/regression.py decide with this)."""
    return [p for p in change_points(values, settings) if p.index >= len(values) - recent]
