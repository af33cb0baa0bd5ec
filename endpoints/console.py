"""The web console: plain HTML, CSS and JavaScript in ``web/``, served at ``/``.

``web/index.html`` is the page; ``web/assets/`` (styles and ES modules) is served under
``/console/``, a prefix of its own, so no path of the API is ever answered by a static file.
The page is a client of Serval's public HTTP API like any other: fetching it needs no key, and
every API call it makes carries the key the user signs in with.
"""

from __future__ import annotations

import os
from os import PathLike
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
ASSETS_DIR = WEB_DIR / "assets"
ASSETS_PATH = "/console"

# Everything the page loads comes from this server; no inline script, no frame around it.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


class ConsoleAssets(StaticFiles):
    """Static files that browsers revalidate (by ETag) on each load, so an upgrade shows at once."""

    def file_response(
        self,
        full_path: str | PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


@router.api_route("/", methods=["GET", "HEAD"])
async def console_page() -> FileResponse:
    """The page; ``HEAD /`` answers too (Claude Code probes it before its first request)."""
    return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


def mount_console(app: FastAPI) -> None:
    """Serve the console at ``/`` and its assets under ``/console/``."""
    app.include_router(router)
    app.mount(ASSETS_PATH, ConsoleAssets(directory=ASSETS_DIR), name="console")
