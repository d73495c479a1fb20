"""The farm's service layer: model storage, device selection, jobs, tokens, queries, and (for
the workers) leases, results and the device registry.

Functions here take ``*, session: Session`` and never commit; the caller (an API request, a
Celery task, a CLI command) owns the transaction. Nothing here imports fastapi or celery: the
API maps the errors below to HTTP codes at its edge.

Importing this package imports nothing else, so that a worker importing
``harness.farm.leases`` does not pay for model parsing.
"""

from __future__ import annotations

from harness.errors import EdgefarmError

Field = tuple[str | int, ...]


class NotFound(EdgefarmError):
    """A request names a row that does not exist (the API answers 404).

    Not a :class:`~harness.errors.JobError`: nothing was measured, so there is no stage.
    """

    def __init__(self, what: str, key: str, value: object) -> None:
        super().__init__(f"no {what} with {key} {value}")
        self.what = what
        self.key = key
        self.value = value


class InvalidRequest(EdgefarmError):
    """A request is well-formed but asks for something the farm cannot do (an unknown
    backend, an input spec that does not fit the model). ``field`` is the path of the
    offending value in the request, as in a validation error (the API answers 422)."""

    def __init__(self, message: str, *, field: Field = ()) -> None:
        super().__init__(message)
        self.field = field


__all__ = ["Field", "InvalidRequest", "NotFound"]
