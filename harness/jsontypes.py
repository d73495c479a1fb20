"""Where data is genuinely free-form JSON, it is typed as JSON, not as ``Any``.

Only for data whose keys nobody fixes in advance: a backend's options as a user gives them
(``{"tvm-cpu": {"opt_level": 2}}``), which the backend itself checks and completes. Every
document with known keys has its own type (``harness.measure.document``,
``harness.measure.protocol``, ``harness.devices``, ...).
"""

from __future__ import annotations

from pydantic import JsonValue

JsonObject = dict[str, JsonValue]
"""A JSON object."""

BackendOptions = JsonObject
"""One backend's options: free-form JSON that the backend checks and completes with its
defaults (``harness.backends``)."""

__all__ = ["BackendOptions", "JsonObject", "JsonValue"]
