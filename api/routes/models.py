"""Models: upload (content-addressed), list, get."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from api.deps import (
    IdPath,
    LimitQuery,
    OffsetQuery,
    SessionDep,
    SettingsDep,
    TokenDep,
    WriterDep,
    next_url,
)
from api.errors import answers
from api.schemas import NO_NUL, ModelPublic, ModelsPublic
from api.upload import FIELD, receive_upload
from harness.farm import NotFound, queries
from harness.farm.models import StagedModel, model_path, store_model
from harness.jsontypes import JsonObject

router = APIRouter(prefix="/models", tags=["models"])

_UPLOAD_BODY: JsonObject = {  # an OpenAPI fragment: the multipart body FastAPI cannot infer
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
        **answers(400, 401, 413, 422, n422="no multipart field `file`, or another field"),
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
    # Received straight into the store's directory, then parsed from there: never in memory.
    with StagedModel(settings.models_path, settings.max_upload_mb * 2**20) as staged:
        filename = await receive_upload(request, staged)
        model, created = await run_in_threadpool(
            lambda: store_model(staged, filename, session=session)
        )
    if not created:
        response.status_code = status.HTTP_200_OK
    return ModelPublic.of(model)


@router.get("", responses=answers(422))
def list_models(
    request: Request,
    session: SessionDep,
    name: Annotated[str | None, Query(pattern=NO_NUL, max_length=255)] = None,
    limit: LimitQuery = queries.DEFAULT_LIMIT,
    offset: OffsetQuery = 0,
) -> ModelsPublic:
    """List models, newest first."""
    page = queries.list_models(session=session, limit=limit, offset=offset, name=name)
    return ModelsPublic(
        data=[ModelPublic.of(m) for m in page.items],
        count=page.count,
        next=next_url(request, page.next_offset),
    )


@router.get("/{model_id}", responses=answers(404, 422, n404="no such model"))
def get_model(model_id: IdPath, session: SessionDep) -> ModelPublic:
    """One model, with its declared inputs."""
    return ModelPublic.of(queries.get_model(model_id, session=session))


@router.get(
    "/{model_id}/file",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the model file"},
        **answers(401, 404, 422, n404="no such model, or its file is gone"),
    },
)
def download_model(
    model_id: IdPath, session: SessionDep, settings: SettingsDep, _reader: TokenDep
) -> FileResponse:
    """The model's bytes; needs a token even when reads are open (worker hosts fetch here)."""
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
