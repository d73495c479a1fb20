"""Nightly regression: change points in a series, and the difference between two measurements."""
