"""How a measurement is timed: the runner's protocol arguments, and the bounds every request
is held to (the API's schema, ``edgefarm bench`` and job validation all read them here)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# A token holder must not be able to hold a phone for a day: every knob of a measurement is
# bounded. With these, a run's timed part ends within SECONDS_MAX, and warm-up is a bounded
# number of calls.
WARMUP_MAX = 10_000
MIN_ITERATIONS_MAX = 100_000
SECONDS_MAX = 3600.0
MAX_SECONDS_MIN = 0.001  # max_seconds must leave room for at least one timed call
SEED_MAX = 2**63 - 1  # random inputs' seed: a 64-bit integer


class ProtocolLimitError(ValueError):
    """A protocol value outside its bounds; ``field`` names it (``warmup``, ``max_seconds``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def check_protocol(
    *, warmup: int, min_iterations: int, min_seconds: float, max_seconds: float
) -> None:
    """:class:`ProtocolLimitError` naming the first value out of its bounds: integers in
    range, finite seconds in range, and ``max_seconds >= min_seconds``."""
    ints = (
        ("warmup", warmup, 0, WARMUP_MAX),
        ("min_iterations", min_iterations, 1, MIN_ITERATIONS_MAX),
    )
    for name, value, low, high in ints:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ProtocolLimitError(
                name, f"{name} is an integer from {low} to {high}, not {value!r}"
            )
    floats = (("min_seconds", min_seconds, 0.0), ("max_seconds", max_seconds, MAX_SECONDS_MIN))
    for name, number, minimum in floats:
        if (
            isinstance(number, bool)
            or not isinstance(number, int | float)
            or not math.isfinite(number)
            or not minimum <= number <= SECONDS_MAX
        ):
            raise ProtocolLimitError(
                name, f"{name} is a number from {minimum} to {SECONDS_MAX:g}, not {number!r}"
            )
    if max_seconds < min_seconds:
        raise ProtocolLimitError(
            "max_seconds", f"max_seconds ({max_seconds}) is below min_seconds ({min_seconds})"
        )


@dataclass
class Protocol:
    """How a measurement is timed."""

    warmup: int = 5
    min_iterations: int = 20
    min_seconds: float = 1.0
    max_seconds: float = 60.0
    # Caps the raw samples kept for sub-microsecond models; the minimum count still applies.
    max_iterations: int = 10_000
    profile: bool = False

    def check(self) -> None:
        """:class:`ProtocolLimitError` when a value is outside the bounds above."""
        check_protocol(
            warmup=self.warmup,
            min_iterations=self.min_iterations,
            min_seconds=self.min_seconds,
            max_seconds=self.max_seconds,
        )

    def runner_args(self) -> list[str]:
        return [
            "--warmup",
            str(self.warmup),
            "--min-iterations",
            str(self.min_iterations),
            "--min-seconds",
            repr(float(self.min_seconds)),
            "--max-seconds",
            repr(float(self.max_seconds)),
            "--max-iterations",
            str(max(self.max_iterations, self.min_iterations)),
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "warmup": self.warmup,
            "min_iterations": self.min_iterations,
            "min_seconds": self.min_seconds,
            "max_seconds": self.max_seconds,
            "max_iterations": self.max_iterations,
        }
