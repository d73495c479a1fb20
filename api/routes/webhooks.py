"""Webhooks: removing one, and its delivery log. (A suite's webhooks are added and listed
under ``/suites/{name}/webhooks``.)"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi import status as http

from api.deps import IdPath, LimitQuery, OffsetQuery, SessionDep, TokenDep, WriterDep, next_url
from api.errors import answers
from api.schemas_nightly import DeliveriesPublic, DeliveryPublic
from harness.db import DeliveryStatus
from harness.farm import queries
from harness.farm.webhooks import delete_webhook, get_webhook, list_deliveries

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

NO_WEBHOOK = "no such webhook"


@router.delete(
    "/{webhook_id}",
    status_code=http.HTTP_204_NO_CONTENT,
    responses=answers(401, 404, 422, n404=NO_WEBHOOK),
)
def delete_webhook_route(webhook_id: IdPath, session: SessionDep, _writer: WriterDep) -> Response:
    """Remove a webhook and its delivery log; nothing more is sent to it."""
    delete_webhook(session, get_webhook(session, webhook_id))
    return Response(status_code=http.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", responses=answers(401, 404, 422, n404=NO_WEBHOOK))
def list_deliveries_route(
    request: Request,
    webhook_id: IdPath,
    session: SessionDep,
    _reader: TokenDep,
    status: DeliveryStatus | None = None,
    limit: LimitQuery = queries.DEFAULT_LIMIT,
    offset: OffsetQuery = 0,
) -> DeliveriesPublic:
    """A webhook's delivery log, newest first (what receivers answered); needs the token."""
    page = list_deliveries(
        session, get_webhook(session, webhook_id), status=status, limit=limit, offset=offset
    )
    return DeliveriesPublic(
        data=[DeliveryPublic.of(delivery) for delivery in page.items],
        count=page.count,
        next=next_url(request, page.next_offset),
    )
