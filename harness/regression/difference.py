"""How two measurements differ: a ratio with its confidence interval, a p-value, a verdict.

Two questions, two tests:

* :func:`sample_difference` compares two sets of raw latency samples (two runs): Mann-Whitney
  U for significance, the rank-biserial correlation as the effect size, and the Hodges-Lehmann
  estimate of the ratio (the median of all pairwise ratios treatment/control) with its
  distribution-free confidence interval. Raw samples of one run are not independent (a phone
  warms, a governor steps), so with thousands of samples a tiny drift is "significant": read
  the ratio and its interval, and use it for display and for a quick look.
* :func:`paired_difference` is the A/B experiment's test: control and treatment ran
  interleaved on one phone (A B A B ...), each block summarised by its median; the log-ratio
  of each adjacent pair cancels the phone's drift, and a one-sample t-test on those
  log-ratios says whether treatment and control differ. This is what confirms an alert.

A verdict is ``slower``/``faster`` only when the difference is significant *and* at least
``min_effect``; ``same`` when the interval lies inside +-``min_effect``; else
``inconclusive`` (more repetitions would tell).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Verdict = Literal["slower", "faster", "same", "inconclusive"]


@dataclass(frozen=True)
class Difference:
    """Treatment against control. ``ratio`` > 1: treatment is slower (larger)."""

    ratio: float
    ratio_low: float
    ratio_high: float
    pvalue: float
    effect_size: float  # rank-biserial (samples) or Cohen's d of the log-ratios (pairs)
    n_control: int
    n_treatment: int
    test: str
    verdict: Verdict

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _verdict(
    ratio: float, low: float, high: float, pvalue: float, *, alpha: float, min_effect: float
) -> Verdict:
    if pvalue <= alpha and abs(ratio - 1.0) >= min_effect:
        return "slower" if ratio > 1.0 else "faster"
    if 1.0 - min_effect < low and high < 1.0 + min_effect:
        return "same"
    return "inconclusive"


def _positive(name: str, values: Sequence[float], minimum: int) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size < minimum:
        raise ValueError(f"{name} needs at least {minimum} values, got {array.size}")
    if not np.all(np.isfinite(array)) or not np.all(array > 0.0):
        raise ValueError(f"{name} must be finite and positive")
    return array


def sample_difference(
    control: Sequence[float],
    treatment: Sequence[float],
    *,
    confidence: float = 0.95,
    alpha: float = 0.01,
    min_effect: float = 0.01,
) -> Difference:
    """Two runs' raw samples compared (Mann-Whitney U, Hodges-Lehmann ratio)."""
    from scipy import stats  # here: at the top it would be a second of every API start

    a = np.log(_positive("control", control, 2))
    b = np.log(_positive("treatment", treatment, 2))
    u, pvalue = stats.mannwhitneyu(b, a, alternative="two-sided")
    effect = float(2.0 * u / (a.size * b.size) - 1.0)  # +1: every treatment sample larger
    pairwise = np.sort((b[:, None] - a[None, :]).ravel())
    shift = float(np.median(pairwise))
    # The interval's ends are order statistics of the pairwise differences, at the rank the
    # U statistic's normal approximation gives (Bauer 1972).
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    n, m = a.size, b.size
    k = math.floor(n * m / 2.0 - z * math.sqrt(n * m * (n + m + 1) / 12.0))
    k = min(max(k, 0), pairwise.size - 1)
    low, high = pairwise[k], pairwise[pairwise.size - 1 - k]
    ratio, ratio_low, ratio_high = math.exp(shift), math.exp(low), math.exp(high)
    return Difference(
        ratio=ratio,
        ratio_low=ratio_low,
        ratio_high=ratio_high,
        pvalue=float(pvalue),
        effect_size=effect,
        n_control=n,
        n_treatment=m,
        test="mann-whitney-u",
        verdict=_verdict(
            ratio, ratio_low, ratio_high, float(pvalue), alpha=alpha, min_effect=min_effect
        ),
    )


def paired_difference(
    control: Sequence[float],
    treatment: Sequence[float],
    *,
    confidence: float = 0.95,
    alpha: float = 0.01,
    min_effect: float = 0.01,
) -> Difference:
    """Interleaved blocks compared pair by pair: ``control[i]`` and ``treatment[i]`` are the
    medians of adjacent blocks on one phone. A t-test on the log-ratios."""
    from scipy import stats  # here: at the top it would be a second of every API start

    a = _positive("control", control, 2)
    b = _positive("treatment", treatment, 2)
    if a.size != b.size:
        raise ValueError(
            f"paired blocks need as many controls as treatments ({a.size} != {b.size})"
        )
    logs = np.log(b) - np.log(a)
    mean = float(logs.mean())
    sd = float(logs.std(ddof=1))
    if sd == 0.0:
        pvalue = 0.0 if mean != 0.0 else 1.0
        half = 0.0
        effect = math.copysign(math.inf, mean) if mean else 0.0
    else:
        se = sd / math.sqrt(logs.size)
        pvalue = float(2.0 * stats.t.sf(abs(mean / se), logs.size - 1))
        half = float(stats.t.ppf(0.5 + confidence / 2.0, logs.size - 1)) * se
        effect = mean / sd
    ratio, low, high = math.exp(mean), math.exp(mean - half), math.exp(mean + half)
    return Difference(
        ratio=ratio,
        ratio_low=low,
        ratio_high=high,
        pvalue=pvalue,
        effect_size=effect,
        n_control=a.size,
        n_treatment=b.size,
        test="paired-t-log-ratio",
        verdict=_verdict(ratio, low, high, pvalue, alpha=alpha, min_effect=min_effect),
    )
