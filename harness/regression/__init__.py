"""Nightly regression: change points in a series, and the difference between two measurements."""

# Pairs of blocks an A/B experiment may ask of a device (edgefarm ab, the farm's confirmation).
MAX_BLOCKS = 200
