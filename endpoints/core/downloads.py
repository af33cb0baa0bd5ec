"""``POST /v1/download``: fetch a model or LoRA repository from the hub (TabbyAPI's route).

Without ``stream`` the answer comes when the download is done (what SillyTavern waits for);
with ``stream: true`` (or ``Accept: text/event-stream``) progress goes out as SSE events. Either
way a client that disconnects cancels the download and its files are removed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request

from common.downloads import DownloadPlan, DownloadSource, download, plan_download
from endpoints.core.types import DownloadProgressEvent, DownloadRequest, DownloadResponse
from endpoints.dependencies import REQUIRE_ADMIN, get_state
from endpoints.streaming import cancel_on_disconnect, sse_response

router = APIRouter(tags=["Downloads"])


async def _events(plan: DownloadPlan) -> AsyncIterator[DownloadProgressEvent]:
    async for progress in download(plan):
        yield DownloadProgressEvent(progress)


async def _to_the_end(plan: DownloadPlan) -> DownloadResponse:
    async for progress in download(plan):
        if progress.download_path is not None:
            return DownloadResponse(download_path=progress.download_path)
    raise AssertionError("a download ends with a finished event")


@router.post(
    "/v1/download",
    summary="Download a repository from the hub into model_dir or lora_dir",
    dependencies=REQUIRE_ADMIN,
    response_model=DownloadResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "DownloadResponse, or with stream a DownloadProgressEvent stream",
        }
    },
)
async def download_repo(body: DownloadRequest, request: Request) -> Any:
    state = get_state(request)
    container = state.container
    base: Path = container.lora_dir if body.repo_type == "lora" else container.model_dir
    plan = await asyncio.to_thread(plan_download, base, DownloadSource.read(body))
    request.state.log_extra = f"{body.repo_id} ({len(plan.files)} files)"
    if body.stream or "text/event-stream" in request.headers.get("accept", ""):
        return sse_response(_events(plan), state.config.network.sse_ping_interval, done=False)
    return await cancel_on_disconnect(request, _to_the_end(plan))
