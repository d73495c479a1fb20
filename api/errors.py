"""edgefarm's errors as HTTP answers: the only place that maps one to the other.

NotFound             404  {"detail": "no job with id 7"}
NoDevicesMatch       409  {"detail": ..., "devices": [...]}
ModelTooLarge        413
NotAModel            400  {"detail": <why>}
InvalidRequest       422  {"detail": [{"loc": [...], "msg": ..., "type": "value_error"}]}
a request's own      422  FastAPI's validation errors, with NaN and infinities given back as
validation errors         strings ("NaN"): JSON has no such numbers
other JobError       422  {"detail": ..., "stage": ...}
InfrastructureError  503
anything else        500  one line; the traceback goes to the log only
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.schemas import ErrorPublic, NoDevicesPublic, ValidationErrorPublic
from harness.errors import EdgefarmError, InfrastructureError, JobError
from harness.farm import InvalidRequest, NotFound
from harness.farm.models import ModelTooLarge, NotAModel
from harness.farm.selection import NoDevicesMatch

log = logging.getLogger(__name__)

_LOCATIONS = ("body", "query", "path")


def _edgefarm_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, NotFound):
        return JSONResponse({"detail": exc.message}, status.HTTP_404_NOT_FOUND)
    if isinstance(exc, NoDevicesMatch):
        return JSONResponse(
            {"detail": exc.message, "devices": exc.devices}, status.HTTP_409_CONFLICT
        )
    if isinstance(exc, ModelTooLarge):
        return JSONResponse({"detail": exc.message}, status.HTTP_413_CONTENT_TOO_LARGE)
    if isinstance(exc, NotAModel):
        return JSONResponse({"detail": exc.message}, status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, InvalidRequest):
        loc = (
            list(exc.field) if exc.field[:1] in [(p,) for p in _LOCATIONS] else ["body", *exc.field]
        )
        detail = [{"type": "value_error", "loc": loc, "msg": exc.message}]
        return JSONResponse({"detail": detail}, status.HTTP_422_UNPROCESSABLE_CONTENT)
    if isinstance(exc, JobError):
        return JSONResponse(
            {"detail": exc.message, "stage": exc.stage}, status.HTTP_422_UNPROCESSABLE_CONTENT
        )
    if isinstance(exc, InfrastructureError):
        log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return JSONResponse({"detail": exc.message}, status.HTTP_503_SERVICE_UNAVAILABLE)
    return _internal(request, exc)


def _json_safe(value: Any) -> Any:
    """``value`` with every NaN and infinity replaced by its text: a validation error
    echoes the rejected input, and JSON cannot carry those numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = _json_safe(jsonable_encoder(exc.errors()))
    return JSONResponse({"detail": detail}, status.HTTP_422_UNPROCESSABLE_CONTENT)


def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": f"internal error ({type(exc).__name__}); the API server's log has the details"},
        status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


# What each answer means by default, and its body; routes list theirs with answers().
_ANSWERS: dict[int, tuple[type[BaseModel], str]] = {
    400: (ErrorPublic, "not a model edgefarm can read (says why)"),
    401: (ErrorPublic, "no bearer token, or an unknown or revoked one"),
    404: (ErrorPublic, "no such row"),
    409: (NoDevicesPublic, "no good device matches (lists the farm's devices)"),
    413: (ErrorPublic, "over EDGEFARM_MAX_UPLOAD_MB; nothing was stored"),
    422: (ValidationErrorPublic, "the request is invalid; `loc` names the field"),
}


NOT_JSON = "the body is not JSON (FastAPI cannot parse it)"


def answers(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route for the error answers it gives; ``described``
    overrides a description, keyed ``n404=...``."""
    documented: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        model, description = _ANSWERS[code]
        documented[code] = {
            "model": model,
            "description": described.get(f"n{code}", description),
        }
    return documented


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(EdgefarmError, _edgefarm_error)
    app.add_exception_handler(Exception, _internal)
