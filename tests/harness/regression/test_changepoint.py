"""The change-point detector on series whose truth is known (seeded noise)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.regression.changepoint import DetectorSettings, change_points


def _noisy(level: float, nights: int, rng: np.random.Generator, cv: float = 0.01) -> list[float]:
    return list(level * np.exp(rng.normal(0.0, cv, nights)))


def test_a_step_is_found_where_it_happened_with_its_size() -> None:
    rng = np.random.default_rng(1)
    values = _noisy(10.0, 20, rng) + _noisy(11.0, 10, rng)
    (point,) = change_points(values)
    assert point.index == 20
    assert point.direction == "up"
    assert point.ratio == pytest.approx(1.1, rel=0.02)
    assert point.ratio_low < point.ratio < point.ratio_high
    assert point.ratio_low > 1.05  # the interval excludes no change
    assert point.pvalue < 1e-6


def test_the_newest_night_alone_can_be_a_change() -> None:
    rng = np.random.default_rng(2)
    values = [*_noisy(10.0, 30, rng), 12.0]
    (point,) = change_points(values)
    assert point.index == 30


def test_two_steps_are_two_change_points() -> None:
    rng = np.random.default_rng(3)
    values = _noisy(10.0, 15, rng) + _noisy(9.0, 15, rng) + _noisy(10.5, 15, rng)
    points = change_points(values)
    assert [p.index for p in points] == [15, 30]
    assert [p.direction for p in points] == ["down", "up"]


def test_noise_alone_rarely_raises_a_change() -> None:
    rng = np.random.default_rng(4)
    alarms = sum(bool(change_points(_noisy(10.0, 30, rng, cv=0.03))) for _ in range(300))
    assert alarms <= 3  # max_pvalue 0.001 over ~30 candidate splits, with pruning


def test_a_significant_change_smaller_than_the_minimum_effect_is_not_reported() -> None:
    rng = np.random.default_rng(5)
    values = _noisy(10.0, 30, rng, cv=0.001) + _noisy(10.1, 10, rng, cv=0.001)  # +1%
    assert change_points(values, DetectorSettings(min_effect=0.02)) == []
    (point,) = change_points(values, DetectorSettings(min_effect=0.005))
    assert point.index == 30


def test_a_series_with_zeros_is_tested_on_its_own_scale() -> None:
    values = [0.0] * 20 + [0.5] * 5  # an accuracy error appearing
    (point,) = change_points(values)
    assert point.index == 20
    assert point.before == 0.0 and point.after == 0.5


def test_short_or_flat_series_have_no_change() -> None:
    assert change_points([]) == []
    assert change_points([1.0, 2.0]) == []
    assert change_points([5.0] * 40) == []


@pytest.mark.parametrize("bad", [[1.0, float("nan"), 2.0], [[1.0, 2.0]], [1.0, float("inf"), 3.0]])
def test_bad_values_are_refused_by_name(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="finite"):
        change_points(bad)


def test_bad_settings_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="max_pvalue"):
        DetectorSettings(max_pvalue=0.0)
    with pytest.raises(ValueError, match="min_segment"):
        DetectorSettings(min_segment=0)


def test_a_noisy_night_just_before_a_large_change_does_not_hide_it() -> None:
    """A CI night's medians (ms): a slow night (10.1) right before a 30x slowdown. The blip
    is a split of its own, which left the real change one night to be tested against; pruning
    the weakest dropped the real change and then the blip: nothing was found."""
    values = [7.85, 7.672, 7.856, 7.967, 7.648, 10.101, 248.083, 222.541]
    (point,) = change_points(values, DetectorSettings(min_effect=1.5))
    assert point.index == 6 and point.ratio > 20
