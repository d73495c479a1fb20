"""Two measurements compared, on samples whose true difference is known (seeded)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.regression.difference import paired_difference, sample_difference


def _samples(median: float, n: int, rng: np.random.Generator, cv: float = 0.05) -> list[float]:
    return list(median * np.exp(rng.normal(0.0, cv, n)))


def test_a_slower_run_is_called_slower_with_an_interval_around_the_true_ratio() -> None:
    rng = np.random.default_rng(1)
    diff = sample_difference(_samples(10.0, 200, rng), _samples(11.0, 200, rng))
    assert diff.verdict == "slower"
    assert diff.ratio_low < 1.1 < diff.ratio_high
    assert diff.ratio == pytest.approx(1.1, rel=0.02)
    assert diff.pvalue < 1e-10
    assert 0.5 < diff.effect_size <= 1.0
    assert (diff.n_control, diff.n_treatment) == (200, 200)


def test_the_same_distribution_is_same_or_inconclusive_never_a_change() -> None:
    rng = np.random.default_rng(2)
    verdicts = {
        sample_difference(_samples(10.0, 100, rng, 0.02), _samples(10.0, 100, rng, 0.02)).verdict
        for _ in range(50)
    }
    assert verdicts <= {"same", "inconclusive"}
    assert "same" in verdicts


def test_a_faster_treatment_is_faster() -> None:
    rng = np.random.default_rng(3)
    diff = sample_difference(_samples(10.0, 50, rng), _samples(8.0, 50, rng))
    assert diff.verdict == "faster"
    assert diff.ratio < 1.0 and diff.effect_size < 0.0


def test_interleaved_pairs_cancel_a_drifting_phone() -> None:
    rng = np.random.default_rng(4)
    drift = np.linspace(1.0, 1.3, 12)  # the phone slows by 30% over the experiment
    control = 10.0 * drift * np.exp(rng.normal(0.0, 0.003, 12))
    treatment = 10.2 * drift * np.exp(rng.normal(0.0, 0.003, 12))  # truly 2% slower
    paired = paired_difference(list(control), list(treatment))
    assert paired.verdict == "slower"
    assert paired.ratio_low < 1.02 < paired.ratio_high
    # Pooled, the drift swamps the 2%: the unpaired test cannot tell.
    assert sample_difference(list(control), list(treatment)).verdict == "inconclusive"


def test_a_paired_null_is_not_a_change() -> None:
    rng = np.random.default_rng(5)
    changes = 0
    for _ in range(200):
        control = _samples(10.0, 8, rng, cv=0.01)
        treatment = _samples(10.0, 8, rng, cv=0.01)
        changes += paired_difference(control, treatment).verdict in ("slower", "faster")
    assert changes <= 6  # alpha 0.01, and a 1% minimum effect


def test_bad_input_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="control needs at least 2"):
        sample_difference([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="treatment must be finite and positive"):
        sample_difference([1.0, 2.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="as many controls as treatments"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])
