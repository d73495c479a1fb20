"""How a measurement is timed: the runner's protocol arguments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
