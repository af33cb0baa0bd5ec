"""Which model serves a request: the loaded one, or (inline loading) the one it names."""

from __future__ import annotations

from fastapi import Request
from loguru import logger

from common.auth import KeyLevel
from common.errors import PermissionDeniedError
from common.model import Lease
from endpoints.dependencies import key_level
from endpoints.state import ServerState


async def lease_for(model: str | None, request: Request, state: ServerState) -> Lease:
    """A lease on the engine for a request whose ``model`` field is ``model``.

    Without ``model.inline_model_loading`` the field is ignored, as in TabbyAPI. With it, an admin
    key loads the named model first; an api key may only name the loaded model or a dummy name.
    """
    config = state.config.model
    container = state.container
    if not model or not config.inline_model_loading or model == container.name:
        return await container.acquire()
    if model in config.dummy_model_names:
        return await container.acquire()
    if key_level(request) < KeyLevel.ADMIN:
        raise PermissionDeniedError(
            f"Model {model!r} is not loaded, and only an admin key may load it.", param="model"
        )
    plan = container.plan_load(model, request={})
    logger.info(f"inline load of {model} requested")
    async for _ in container.load(plan):
        pass
    return await container.acquire()
