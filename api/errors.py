"""edgefarm's errors as HTTP answers: the only place that maps one to the other.

NotFound             404  {"detail": "no job with id 7"}
NoDevicesMatch       409  {"detail": ..., "devices": [...]}
ModelTooLarge        413
NotAModel            400  {"detail": <why>}
InvalidRequest       422  {"detail": [{"loc": [...], "msg": ..., "type": "value_error"}]}
other JobError       422  {"detail": ..., "stage": ...}
InfrastructureError  503
anything else        500  one line; the traceback goes to the log only
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

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


def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": f"internal error ({type(exc).__name__}); the API server's log has the details"},
        status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(EdgefarmError, _edgefarm_error)
    app.add_exception_handler(Exception, _internal)
