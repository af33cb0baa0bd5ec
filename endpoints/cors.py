"""Which browser pages may call the API (CORS), as TabbyAPI and KoboldCpp allow by default.

Keys travel in headers, never in cookies, so a page on another origin can only use the API
with a key its user gave it: with auth on, any origin is allowed. With ``disable_auth`` any
page could drive the server, so by default only pages served from this machine (loopback
origins) are trusted.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

LOOPBACK_ORIGINS = r"https?://(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d{1,5})?"


def install_cors(app: FastAPI, origins: list[str] | None, auth_disabled: bool) -> None:
    """Add the CORS middleware for ``network.cors_origins`` (see its description).

    Call it after every other middleware: the outermost layer also marks refusals made
    before a route runs (a 401, a 413), which a page could not read otherwise.
    """
    if origins == []:
        return
    if origins is None and auth_disabled:
        allowed: dict[str, object] = {"allow_origin_regex": LOOPBACK_ORIGINS}
    else:
        allowed = {"allow_origins": ["*"] if origins is None else list(origins)}
    app.add_middleware(
        CORSMiddleware,
        **allowed,  # type: ignore[arg-type]
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["*"],
        allow_credentials=False,
    )
