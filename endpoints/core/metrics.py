"""``GET /metrics`` in the Prometheus text format; the key level it needs is configurable."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from common.auth import KeyLevel
from endpoints.dependencies import get_state

router = APIRouter(tags=["Server"])

_LEVELS = {"api": KeyLevel.API, "admin": KeyLevel.ADMIN}


@router.get(
    "/metrics",
    summary="Prometheus metrics (key level from network.metrics_auth)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(request: Request) -> Response:
    state = get_state(request)
    needed = _LEVELS.get(state.config.network.metrics_auth)
    if needed is not None:
        state.auth.require(request.headers, needed)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
