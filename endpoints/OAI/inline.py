"""Which model serves a request: the loaded one, or (inline loading) the one it names."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request

from common.auth import KeyLevel
from common.errors import BadRequestError, PermissionDeniedError
from common.model import Lease
from common.paths import safe_child
from endpoints.dependencies import key_level, share_owner
from endpoints.state import ServerState


async def lease_for(model: str | None, request: Request, state: ServerState) -> Lease:
    """A lease on the engine for a request whose ``model`` field is ``model``.

    Without ``model.inline_model_loading`` the field is ignored, as in TabbyAPI, and so are the
    dummy model names. With it, an admin key loads the named model first (requests already
    running finish on the old one; the lease is taken before any other load can start); an api
    key may only name the loaded model (403 otherwise).
    """
    config = state.config.model
    container = state.container
    owner = share_owner(request)
    if not model or not config.inline_model_loading or model in config.dummy_model_names:
        return await container.acquire(owner)
    if key_level(request) >= KeyLevel.ADMIN:
        return await container.acquire_model(container.plan_load(model, request={}), owner)
    lease = await container.acquire(owner)
    if model != lease.name and _folder(state, model) != lease.path:
        lease.release()
        raise PermissionDeniedError(
            f"Model {model!r} is not loaded, and only an admin key may load it.", param="model"
        )
    return lease


def _folder(state: ServerState, model: str) -> Path | None:
    """The folder ``model`` names, to recognise the loaded model by another spelling."""
    try:
        return safe_child(state.container.model_dir, model, what="model", follow_links=True)
    except BadRequestError:
        return None
