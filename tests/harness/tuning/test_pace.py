"""A tuning's batch lines say how far it is and how long it may still take (a tuning of a
trained model to 512 trials per task runs for hours)."""

from __future__ import annotations

from harness.tuning.session import pace


def test_a_trials_budget_shows_candidates_rate_and_an_upper_bound_on_the_time_left() -> None:
    assert pace(16, 8064, 8.0) == "16 of at most 8064 candidates, 2.0 a second, at most 67 min left"
    assert (
        pace(100, 26000, 40.0)
        == "100 of at most 26000 candidates, 2.5 a second, at most 2.9 h left"
    )
    assert pace(30, 40, 10.0) == "30 of at most 40 candidates, 3.0 a second, at most 4 s left"


def test_nothing_left_or_no_rate_yet_gives_no_time() -> None:
    assert pace(4, 4, 2.0) == "4 of at most 4 candidates, 2.0 a second"
    assert pace(0, 10, 0.0) == "0 of at most 10 candidates, 0.0 a second"


def test_a_time_budget_shows_what_is_left_of_it() -> None:
    assert pace(10, None, 5.0, left_s=45.2) == "2.0 a second, 46 s of the budget left"
    assert pace(10, None, 5.0, left_s=-3.0) == "2.0 a second, 0 s of the budget left"
    assert pace(10, None, 5.0) == "2.0 a second"
