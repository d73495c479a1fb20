"""What a benchmark asks of each measurement, defined once.

:class:`MeasurementSettings` holds every knob with its bounds and its default; ``edgefarm
bench``, the farm's settings, the API's schema, job validation and the workers all read them
here. :class:`MeasurementRequest` is the same knobs as a caller gives them (a knob left out
takes the farm's default), and :class:`Protocol` is the part the runner times with.
"""

from __future__ import annotations

from typing import Annotated, Self

import annotated_types
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from harness.jsontypes import BackendOptions as BackendOptions  # re-exported

# A token holder must not be able to hold a phone for a day: every knob of a measurement is
# bounded. With these, a run's timed part ends within SECONDS_MAX, and warm-up is a bounded
# number of calls.
WARMUP_MAX = 10_000
MIN_ITERATIONS_MAX = 100_000
SECONDS_MIN = 0.0
SECONDS_MAX = 3600.0
MAX_SECONDS_MIN = 0.001  # max_seconds must leave room for at least one timed call
SEED_MAX = 2**63 - 1  # random inputs' seed: a 64-bit integer
MAX_ITERATIONS = 10_000  # raw samples kept at most (sub-microsecond models); not a user knob
MAX_SPECS = 256  # input specs of one benchmark
MAX_SPEC_LENGTH = 1024

# The farm keeps settings in PostgreSQL's JSONB, which cannot hold NUL: no text may contain one.
NO_NUL = r"^[^\x00]*$"

Warmup = Annotated[int, Field(ge=0, le=WARMUP_MAX)]
MinIterations = Annotated[int, Field(ge=1, le=MIN_ITERATIONS_MAX)]
MinSeconds = Annotated[float, Field(ge=SECONDS_MIN, le=SECONDS_MAX, allow_inf_nan=False)]
MaxSeconds = Annotated[float, Field(ge=MAX_SECONDS_MIN, le=SECONDS_MAX, allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
InputSpecText = Annotated[str, Field(min_length=1, max_length=MAX_SPEC_LENGTH, pattern=NO_NUL)]

INPUTS_HELP = (
    "input specs NAME:1x3x224x224[:dtype]; needed for dynamic dimensions. Every input must stay "
    "within EDGEFARM_MAX_INPUT_ELEMENTS and EDGEFARM_MAX_INPUT_MB, all together within "
    "EDGEFARM_MAX_INPUTS_MB"
)
OPTIONS_HELP = 'per backend, e.g. {"tvm-cpu": {"opt_level": 2}}'


def _max_after_min(value: float | None, info: ValidationInfo) -> float | None:
    # Given together, checked here; one alone is checked against the farm's default when a
    # request is completed (MeasurementRequest.resolve).
    minimum = info.data.get("min_seconds")
    if value is not None and minimum is not None and value < minimum:
        raise ValueError(f"max_seconds ({value}) is below min_seconds ({minimum})")
    return value


class _Knobs(BaseModel):
    @classmethod
    def checked(cls, **given: object) -> Self:
        """Settings from ``given`` (the defaults for what is left out); a
        :class:`ProtocolLimitError` naming the first knob out of its bounds."""
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            raise ProtocolLimitError.of(exc) from None


class MeasurementSettings(_Knobs):
    """What a benchmark asks of each of its measurements, complete. The bounds and defaults
    of every knob live here and nowhere else; a farm job stores the dump."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: list[InputSpecText] = Field(
        default_factory=list, max_length=MAX_SPECS, description=INPUTS_HELP
    )
    warmup: Warmup = Field(default=5, description="untimed calls first")
    min_iterations: MinIterations = Field(default=20, description="timed calls, at least")
    min_seconds: MinSeconds = Field(default=1.0, description="timed seconds, at least")
    max_seconds: MaxSeconds = Field(
        default=60.0, description="stop timing after this; at least min_seconds"
    )
    seed: Seed = Field(default=0, description="seed of the random inputs")
    options: dict[str, BackendOptions] = Field(default_factory=dict, description=OPTIONS_HELP)
    profile: bool = Field(default=False, description="per-operator times (TVM backends)")

    max_after_min = field_validator("max_seconds")(_max_after_min)

    def protocol(self) -> Protocol:
        """The runner's part: how each measurement is timed."""
        return Protocol(
            warmup=self.warmup,
            min_iterations=self.min_iterations,
            min_seconds=self.min_seconds,
            max_seconds=self.max_seconds,
            profile=self.profile,
        )


DEFAULTS = MeasurementSettings()


class MeasurementRequest(_Knobs):
    """:class:`MeasurementSettings` as a caller asks for them: a knob left out (or null)
    takes the farm's default (``EDGEFARM_WARMUP``, ...: :meth:`harness.config.Settings.
    measurement`)."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[InputSpecText] = Field(
        default_factory=list, max_length=MAX_SPECS, description=INPUTS_HELP
    )
    warmup: Warmup | None = None
    min_iterations: MinIterations | None = None
    min_seconds: MinSeconds | None = None
    max_seconds: MaxSeconds | None = Field(default=None, description="at least min_seconds")
    seed: Seed | None = None
    options: dict[str, BackendOptions] = Field(default_factory=dict, description=OPTIONS_HELP)
    profile: bool = False

    max_after_min = field_validator("max_seconds")(_max_after_min)

    def resolve(self, defaults: MeasurementSettings) -> MeasurementSettings:
        """These settings completed with ``defaults``; a :class:`ProtocolLimitError` when a
        knob given alone does not fit a default (``min_seconds`` above the default
        ``max_seconds``)."""
        return MeasurementSettings.checked(
            **{**defaults.model_dump(), **self.model_dump(exclude_none=True)}
        )


class Protocol(BaseModel):
    """How a measurement is timed: what the runner is told. Validated when made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warmup: Warmup = DEFAULTS.warmup
    min_iterations: MinIterations = DEFAULTS.min_iterations
    min_seconds: MinSeconds = DEFAULTS.min_seconds
    max_seconds: MaxSeconds = DEFAULTS.max_seconds
    # Caps the raw samples kept for sub-microsecond models; the minimum count still applies.
    max_iterations: int = Field(default=MAX_ITERATIONS, ge=1)
    # Not part of the protocol recorded with a result (the profile is recorded itself).
    profile: bool = Field(default=DEFAULTS.profile, exclude=True)

    max_after_min = field_validator("max_seconds")(_max_after_min)

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

    def to_dict(self) -> dict[str, int | float]:
        """The protocol as a result's provenance records it."""
        return {
            "warmup": self.warmup,
            "min_iterations": self.min_iterations,
            "min_seconds": self.min_seconds,
            "max_seconds": self.max_seconds,
            "max_iterations": self.max_iterations,
        }


class ProtocolLimitError(ValueError):
    """A measurement knob outside its bounds; ``field`` names it (``warmup``, ``max_seconds``)
    and ``message`` says the bounds in words (``warmup is an integer from 0 to 10000, not
    10001``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    @classmethod
    def of(cls, error: ValidationError) -> ProtocolLimitError:
        """The first problem of a :class:`MeasurementSettings` validation."""
        first = error.errors(include_url=False)[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        value = first.get("input")
        if first["type"] == "value_error":
            return cls(name, str(first["ctx"]["error"]))
        low, high = bounds(name)
        if low is None or high is None:
            return cls(name, f"{name}: {first['msg']}")
        if MeasurementSettings.model_fields[name].annotation is int:
            return cls(name, f"{name} is an integer from {low} to {high}, not {value!r}")
        return cls(name, f"{name} is a number from {low} to {high:g}, not {value!r}")


def bounds(name: str) -> tuple[int | float | None, int | float | None]:
    """The lowest and highest value of the numeric knob ``name`` (None: unbounded)."""
    low = high = None
    for item in MeasurementSettings.model_fields[name].metadata:
        if isinstance(item, annotated_types.Ge) and isinstance(item.ge, int | float):
            low = item.ge
        elif isinstance(item, annotated_types.Le) and isinstance(item.le, int | float):
            high = item.le
    return low, high
