"""A local stand-in for the Hugging Face hub, served by the test itself (no network).

It answers the two calls ``huggingface_hub`` makes for a download: the tree listing
(``/api/models/{repo}/tree/{revision}``) and the file download (``HEAD``/``GET``
``/{repo}/resolve/{revision}/{path}``, with ``Range`` for resumed transfers), and refuses the way
the hub does: ``X-Error-Code`` RepoNotFound, RevisionNotFound, GatedRepo, and 401 for a bad token.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.server import free_port

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubRepo:
    """A repository: its files per revision, and how it treats callers."""

    revisions: dict[str, dict[str, bytes]]
    gated: bool = False
    token: str | None = None  # a private repo: this token reads it
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes before each cut
    slow: dict[str, float] = field(default_factory=dict)  # path -> seconds per 1 KiB chunk


def _refuse(status: int, code: str | None, message: str = "refused") -> Response:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class HubStandIn:
    def __init__(self, repos: dict[str, HubRepo]) -> None:
        self.repos = repos
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(
            routes=[
                Route("/api/models/{owner}/{name}/tree/{revision}", self._tree),
                Route(
                    "/{owner}/{name}/resolve/{revision}/{path:path}",
                    self._resolve,
                    methods=["GET", "HEAD"],
                ),
            ]
        )
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )

    def _files(self, request: Request) -> dict[str, bytes] | Response:
        repo_id = f"{request.path_params['owner']}/{request.path_params['name']}"
        repo = self.repos.get(repo_id)
        if repo is None:
            return _refuse(401, "RepoNotFound", "Repository not found")
        if repo.token is not None:
            sent = request.headers.get("authorization", "")
            if not sent:
                return _refuse(401, "RepoNotFound", "Repository not found")
            if sent != f"Bearer {repo.token}":
                return _refuse(401, None, "Invalid credentials in Authorization header")
        if repo.gated:
            return _refuse(403, "GatedRepo", "Access to this model is restricted")
        files = repo.revisions.get(request.path_params["revision"])
        if files is None:
            return _refuse(404, "RevisionNotFound", "Invalid rev id")
        return files

    async def _tree(self, request: Request) -> Response:
        files = self._files(request)
        if isinstance(files, Response):
            return files
        return JSONResponse(
            [
                {"type": "file", "path": path, "size": len(data), "oid": _oid(data)}
                for path, data in sorted(files.items())
            ]
        )

    async def _resolve(self, request: Request) -> Response:
        files = self._files(request)
        if isinstance(files, Response):
            return files
        path = request.path_params["path"]
        if path not in files:
            return _refuse(404, "EntryNotFound", "Entry not found")
        data = files[path]
        headers = {"ETag": f'"{_oid(data)}"', "X-Repo-Commit": COMMIT}
        if request.method == "HEAD":
            return Response(headers={**headers, "Content-Length": str(len(data))})
        start = 0
        ranged = request.headers.get("range", "")
        if ranged.startswith("bytes="):
            start = int(ranged[6:].split("-")[0])
        repo = self.repos[f"{request.path_params['owner']}/{request.path_params['name']}"]
        body = self._body(data[start:], repo.cut_after.get(path), repo.slow.get(path, 0.0))
        headers["Content-Length"] = str(len(data) - start)
        return StreamingResponse(body, status_code=206 if start else 200, headers=headers)

    @staticmethod
    async def _body(data: bytes, cut_after: int | None, delay: float) -> AsyncIterator[bytes]:
        sent = 0
        for offset in range(0, len(data), 1024):
            if cut_after is not None and sent >= cut_after:
                raise ConnectionError("the stand-in hub cuts this transfer")
            chunk = data[offset : offset + 1024]
            sent += len(chunk)
            yield chunk
            if delay:
                await asyncio.sleep(delay)

    @contextmanager
    def running(self) -> Iterator[HubStandIn]:
        thread = threading.Thread(target=self._server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert time.monotonic() < deadline, "the stand-in hub did not start"
            time.sleep(0.05)
        try:
            yield self
        finally:
            self._server.should_exit = True
            thread.join(timeout=10)


def _oid(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()
