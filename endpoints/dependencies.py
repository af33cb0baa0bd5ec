"""FastAPI dependencies: the server state and the key level a route needs."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from fastapi import Depends, Request, params

from common.auth import KeyLevel, presented_keys
from endpoints.state import ServerState


def get_state(request: Request) -> ServerState:
    return request.app.state.serval


def key_level(request: Request) -> KeyLevel:
    """The caller's level (401 without a valid key)."""
    return get_state(request).auth.level(request.headers)


def require_api(request: Request) -> KeyLevel:
    """An api or admin key (401 otherwise)."""
    level = key_level(request)
    request.state.key_level = level
    return level


def require_admin(request: Request) -> KeyLevel:
    """The admin key (401 without a key, 403 with an api key)."""
    level = get_state(request).auth.require(request.headers, KeyLevel.ADMIN)
    request.state.key_level = level
    return level


def caller_key(request: Request) -> str:
    """The key the caller presented (for scoping per-key state such as Kobold genkeys)."""
    keys = presented_keys(request.headers)
    return keys[0] if keys else ""


def key_owner(request: Request) -> str:
    """What per-key state (stored responses) is filed under: a hash of the caller's key."""
    return hashlib.sha256(caller_key(request).encode("utf-8")).hexdigest()


def share_owner(request: Request) -> str:
    """Whose fair share of the generation slots a request uses: its key (as a hash, never the
    key itself), or with ``network.disable_auth`` (no keys) its client's address."""
    if get_state(request).config.network.disable_auth:
        client = request.client
        return f"client {client.host}" if client else "client"
    return key_owner(request)[:16]


# A route's (or a router's) ``dependencies=``: the key it needs (an admin key passes both).
REQUIRE_API: Sequence[params.Depends] = [Depends(require_api)]
REQUIRE_ADMIN: Sequence[params.Depends] = [Depends(require_admin)]
