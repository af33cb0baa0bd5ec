"""Chat template routes: list, switch, unload."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from common.auth import KeyLevel
from common.chat.templates import list_templates, load_named_template
from endpoints.core.types import NameList, TemplateSwitchRequest
from endpoints.dependencies import REQUIRE_ADMIN, REQUIRE_API, get_state, require_api

router = APIRouter(tags=["Templates"], dependencies=REQUIRE_API)  # admin routes add REQUIRE_ADMIN


@router.get("/v1/templates", summary="List chat templates")
@router.get("/v1/template/list")
async def templates(request: Request, level: KeyLevel = Depends(require_api)) -> NameList:
    """Admin keys see every file in templates/; api keys the template in use."""
    if level >= KeyLevel.ADMIN:
        return NameList(data=list_templates())
    template = get_state(request).container.template
    return NameList(data=[template.name] if template else [])


@router.post("/v1/template/switch", summary="Use another chat template", dependencies=REQUIRE_ADMIN)
async def switch_template(body: TemplateSwitchRequest, request: Request) -> None:
    container = get_state(request).container
    await container.current()
    container.template = load_named_template(body.prompt_template_name)


@router.post("/v1/template/unload", summary="Drop the chat template", dependencies=REQUIRE_ADMIN)
async def unload_template(request: Request) -> None:
    container = get_state(request).container
    await container.current()
    container.template = None
