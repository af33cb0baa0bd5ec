"""LoRA routes: list, load, unload."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from common.auth import KeyLevel
from common.errors import BadRequestError
from common.loras import list_lora_folders, resolve_loras
from endpoints.core.types import (
    LoraCard,
    LoraList,
    LoraLoadRequest,
    LoraLoadResponse,
    LoraUnloadRequest,
)
from endpoints.dependencies import REQUIRE_ADMIN, REQUIRE_API, get_state, require_api
from endpoints.state import ServerState

router = APIRouter(tags=["LoRAs"], dependencies=REQUIRE_API)  # admin routes add REQUIRE_ADMIN


def _active(state: ServerState) -> dict[str, float]:
    info = state.container.loaded_info()
    return dict(info.loras) if info is not None else {}


def _cards(state: ServerState, names: list[str], active: dict[str, float]) -> LoraList:
    created = int(state.started_at)
    return LoraList(
        data=[LoraCard(id=name, created=created, scaling=active.get(name)) for name in names]
    )


@router.get("/v1/loras", summary="List LoRAs")
@router.get("/v1/lora/list", include_in_schema=False)
async def list_loras(request: Request, level: KeyLevel = Depends(require_api)) -> LoraList:
    """Admin keys see every LoRA folder in lora_dir; api keys the LoRAs in use."""
    state = get_state(request)
    active = _active(state)
    if level >= KeyLevel.ADMIN:
        return _cards(state, list_lora_folders(state.container.lora_dir), active)
    return _cards(state, list(active), active)


@router.get("/v1/lora", summary="The LoRAs in use")
async def active_loras(request: Request) -> LoraList:
    state = get_state(request)
    await state.container.current()
    active = _active(state)
    return _cards(state, list(active), active)


@router.post(
    "/v1/lora/load",
    summary="Use these LoRAs (replacing those in use)",
    dependencies=REQUIRE_ADMIN,
)
async def load_loras(body: LoraLoadRequest, request: Request) -> LoraLoadResponse:
    """Running requests finish first (or are cancelled with ``skip_queue``); requests that
    arrive meanwhile wait, then run with the new LoRAs."""
    container = get_state(request).container
    if not body.loras:
        raise BadRequestError(
            "Name at least one LoRA (POST /v1/lora/unload stops using them all).", param="loras"
        )
    names = [lora.name for lora in body.loras]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise BadRequestError(f"LoRA {repeated[0]!r} is named twice.", param="loras")
    found, _ = resolve_loras(container.lora_dir, [(lora.name, lora.scaling) for lora in body.loras])
    await container.current()
    result = await container.load_loras(found, skip_queue=body.skip_queue)
    success = result["success"]
    return LoraLoadResponse(success=success, failure=[n for n in names if n not in success])


@router.post("/v1/lora/unload", summary="Stop using every LoRA", dependencies=REQUIRE_ADMIN)
async def unload_loras(request: Request, body: LoraUnloadRequest | None = None) -> None:
    container = get_state(request).container
    await container.current()
    await container.unload_loras(skip_queue=body.skip_queue if body else False)
