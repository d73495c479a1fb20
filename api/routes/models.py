"""Models: upload (content-addressed), list, get."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from api.deps import IdPath, SessionDep, SettingsDep, WriterDep, next_url
from api.schemas import ErrorPublic, ModelPublic, ModelsPublic
from api.upload import FIELD, receive_upload
from harness.farm import NotFound, queries
from harness.farm.models import model_path, store_model

router = APIRouter(prefix="/models", tags=["models"])

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {FIELD: {"type": "string", "format": "binary"}},
                    "required": [FIELD],
                    "additionalProperties": False,
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": ModelPublic, "description": "these bytes were uploaded before"},
        400: {"model": ErrorPublic, "description": "not a model edgefarm can read"},
        413: {"model": ErrorPublic, "description": "over EDGEFARM_MAX_UPLOAD_MB"},
    },
    openapi_extra=_UPLOAD_BODY,
)
async def upload_model(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    _writer: WriterDep,
) -> ModelPublic:
    """Upload an ONNX, TFLite or .pt2 model as the multipart field `file`."""
    max_bytes = settings.max_upload_mb * 2**20
    upload = await receive_upload(request, max_bytes=max_bytes)
    model, created = await run_in_threadpool(
        lambda: store_model(
            upload.data,
            upload.filename,
            session=session,
            max_bytes=max_bytes,
            directory=settings.models_path,
        )
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return ModelPublic.of(model)


@router.get("")
def list_models(
    request: Request,
    session: SessionDep,
    name: str | None = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = queries.DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ModelsPublic:
    """List models, newest first."""
    page = queries.list_models(session=session, limit=limit, offset=offset, name=name)
    return ModelsPublic(
        data=[ModelPublic.of(m) for m in page.items],
        count=page.count,
        next=next_url(request, page.next_offset),
    )


@router.get("/{model_id}", responses={404: {"model": ErrorPublic}})
def get_model(model_id: IdPath, session: SessionDep) -> ModelPublic:
    """One model, with its declared inputs."""
    return ModelPublic.of(queries.get_model(model_id, session=session))


@router.get(
    "/{model_id}/file",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, 404: {"model": ErrorPublic}},
)
def download_model(model_id: IdPath, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """The model's bytes (worker hosts without the API's disk fetch models here)."""
    model = queries.get_model(model_id, session=session)
    path = model_path(model, settings.models_path)
    if not path.is_file():
        raise NotFound("model file", "id", model_id)
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"{model.name}.{model.format}",
        headers={"X-Edgefarm-Sha256": model.sha256},
    )
