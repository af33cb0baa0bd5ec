"""Health, service info and the caller's key level."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from common.auth import KeyLevel
from endpoints.core.types import HealthResponse, PermissionResponse
from endpoints.dependencies import get_state, require_api

router = APIRouter(tags=["Server"])


@router.get(
    "/health",
    response_model=HealthResponse,
    summary="Health (no key needed); 503 while no model can serve",
    responses={503: {"model": HealthResponse}},
)
async def health(request: Request) -> JSONResponse:
    container = get_state(request).container
    issues: list[str] = []
    if container.loading:
        issues.append("a model is loading")
    elif not container.loaded:
        issues.append("no model is loaded")
    body = HealthResponse(status="unhealthy" if issues else "healthy", issues=issues)
    return JSONResponse(body.model_dump(), status_code=503 if issues else 200)


@router.get("/.well-known/serviceinfo", summary="What this server is")
async def service_info() -> dict:
    return {
        "version": 1,
        "software": {"name": "Serval", "repository": "serval"},
        "api": {
            "openai": {"name": "OpenAI API", "base_url": "/v1"},
            "koboldai": {"name": "KoboldAI API", "base_url": "/api"},
        },
    }


@router.get("/v1/auth/permission", summary="The key's level")
async def permission(level: KeyLevel = Depends(require_api)) -> PermissionResponse:
    return PermissionResponse(permission=level.label)
