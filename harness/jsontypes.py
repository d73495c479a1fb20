"""Where data is genuinely free-form JSON, it is typed as JSON, not as ``Any``.

Only for data whose keys nobody fixes in advance: a backend's options as a user gives them
(``{"tvm-cpu": {"opt_level": 2}}``), which the backend itself checks and completes. Every
document with known keys has its own type (``harness.measure.document``,
``harness.measure.protocol``, ``harness.devices``, ...).
"""

from __future__ import annotations

from pydantic import JsonValue

from harness.errors import JobError, Stage

JsonObject = dict[str, JsonValue]
"""A JSON object."""

BackendOptions = JsonObject
"""One backend's options: free-form JSON that the backend checks and completes with its
defaults (``harness.backends``)."""

MAX_THREADS = 256
"""The most threads a TVM backend's option ``threads`` (or a tuning's) may ask for."""

__all__ = ["MAX_THREADS", "BackendOptions", "JsonObject", "JsonValue", "json_int"]


def json_int(value: JsonValue, *, what: str, stage: Stage) -> int:
    """``value`` (an option given as JSON) as an integer: an int, an integral float or the
    digits of one; a JobError at ``stage`` naming ``what`` otherwise."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobError(stage, f"{what} must be an integer, not {value!r}")
    return value
