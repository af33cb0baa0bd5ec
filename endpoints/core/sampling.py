"""Sampler override presets: list, switch (by name or inline), unload."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from common.auth import KeyLevel
from common.errors import BadRequestError
from common.sampling import OverridePreset, list_presets, load_preset
from endpoints.core.types import OverrideListResponse, OverrideSwitchRequest
from endpoints.dependencies import REQUIRE_ADMIN, REQUIRE_API, get_state, require_api

router = APIRouter(tags=["Sampling"], dependencies=REQUIRE_API)  # admin routes add REQUIRE_ADMIN


@router.get("/v1/sampling/overrides", summary="Sampler overrides in effect")
@router.get("/v1/sampling/override/list")
async def overrides(
    request: Request, level: KeyLevel = Depends(require_api)
) -> OverrideListResponse:
    preset = get_state(request).overrides.preset
    return OverrideListResponse(
        selected_preset=preset.name,
        overrides={key: entry.model_dump() for key, entry in preset.entries.items()},
        presets=list_presets() if level >= KeyLevel.ADMIN else [],
    )


@router.post(
    "/v1/sampling/override/switch",
    summary="Apply a preset or inline overrides",
    dependencies=REQUIRE_ADMIN,
)
async def switch_overrides(body: OverrideSwitchRequest, request: Request) -> None:
    state = get_state(request)
    if body.preset:
        state.overrides.set(load_preset(body.preset))
    elif body.overrides is not None:
        state.overrides.set(OverridePreset.from_mapping(body.overrides))
    else:
        raise BadRequestError("Send a preset name or an overrides object.", param="preset")


@router.post(
    "/v1/sampling/override/unload", summary="Clear the overrides", dependencies=REQUIRE_ADMIN
)
async def unload_overrides(request: Request) -> None:
    get_state(request).overrides.clear()
