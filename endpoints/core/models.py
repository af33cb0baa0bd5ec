"""Model routes: list, card, load (with SSE progress), unload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request

from backends.base import LoadProgress
from common.auth import KeyLevel
from common.errors import NotFoundError
from common.model_files import list_model_folders
from common.progress import shown_in_console
from endpoints.core.types import (
    LoadProgressEvent,
    ModelCard,
    ModelCardParameters,
    ModelList,
    ModelLoadRequest,
    Props,
)
from endpoints.dependencies import REQUIRE_ADMIN, REQUIRE_API, get_state, require_api
from endpoints.state import ServerState
from endpoints.streaming import error_payload, sse_response

router = APIRouter(tags=["Models"], dependencies=REQUIRE_API)  # admin routes add REQUIRE_ADMIN


def loaded_card(state: ServerState) -> ModelCard | None:
    container = state.container
    info = container.loaded_info()
    if info is None or container.name is None:
        return None
    template = container.template
    return ModelCard(
        id=container.name,
        created=int(state.started_at),
        max_model_len=info.max_seq_len,
        parameters=ModelCardParameters.model_validate(
            {
                **asdict(info),  # the fields the card shares with the engine's info
                "prompt_template": template.name if template else None,
                "prompt_template_content": template.source if template else None,
                "loras": [name for name, _ in info.loras],
                "use_vision": info.vision,
            }
        ),
    )


def _dummy_cards(state: ServerState) -> list[ModelCard]:
    config = state.config.model
    if not config.use_dummy_models:
        return []
    return [ModelCard(id=name, created=int(state.started_at)) for name in config.dummy_model_names]


def _folder_cards(
    base: Path, state: ServerState, exclude: tuple[Path, ...] = ()
) -> list[ModelCard]:
    return [
        ModelCard(id=folder.id, created=int(state.started_at), max_model_len=folder.max_seq_len)
        for folder in list_model_folders(base, exclude)
    ]


@router.get("/v1/models", summary="List models")
@router.get("/v1/model/list")
async def list_models(request: Request, level: KeyLevel = Depends(require_api)) -> ModelList:
    """Admin keys see every model folder; api keys only the loaded model."""
    state = get_state(request)
    cards = _dummy_cards(state)
    if level >= KeyLevel.ADMIN:
        config = state.config
        draft_dir = Path(config.draft_model.draft_model_dir)
        exclude = (draft_dir,) if draft_dir != Path(config.model.model_dir) else ()
        cards += _folder_cards(Path(config.model.model_dir), state, exclude)
        current = loaded_card(state)
        if current is not None:
            cards = [current if card.id == current.id else card for card in cards]
    else:
        current = loaded_card(state)
        cards += [current] if current else []
    return ModelList(data=cards)


@router.get("/v1/models/{model_id:path}", summary="Retrieve a model")
async def retrieve_model(
    model_id: str, request: Request, level: KeyLevel = Depends(require_api)
) -> ModelCard:
    """One card of ``GET /v1/models`` (``client.models.retrieve``): 404 for a model the
    caller's key does not see there."""
    listed = await list_models(request, level)
    for card in listed.data:
        if card.id == model_id:
            return card
    raise NotFoundError(f"The model {model_id!r} does not exist.", param="model")


@router.get("/v1/model/draft/list", summary="List draft models")
async def list_draft_models(request: Request, level: KeyLevel = Depends(require_api)) -> ModelList:
    state = get_state(request)
    if level >= KeyLevel.ADMIN:
        return ModelList(data=_folder_cards(Path(state.config.draft_model.draft_model_dir), state))
    info = state.container.loaded_info()
    draft = info.draft if info else None
    return ModelList(data=[ModelCard(id=draft, created=int(state.started_at))] if draft else [])


@router.get("/v1/model", summary="The loaded model")
async def current_model(request: Request) -> ModelCard:
    state = get_state(request)
    await state.container.current()
    card = loaded_card(state)
    assert card is not None
    return card


@router.get("/props", summary="llama.cpp-style server properties")
async def props(request: Request) -> Props:
    state = get_state(request)
    async with state.container.use() as lease:
        info = lease.info()
    template = state.container.template
    return Props(
        total_slots=info.max_batch_size,
        chat_template=template.source if template else "",
        default_generation_settings={"n_ctx": info.max_seq_len, "model": info.name},
    )


async def _run_load(
    state: ServerState, body: ModelLoadRequest, plan: Any, queue: asyncio.Queue[Any]
) -> None:
    """The load itself, detached from the request: a client that leaves does not stop it."""
    try:
        events = state.container.load(plan, skip_queue=body.skip_queue)
        async for event in shown_in_console(plan.name, events):
            await queue.put(event)
    except Exception as exc:
        await queue.put(exc)
    finally:
        await queue.put(None)


async def _progress_events(queue: asyncio.Queue[Any]) -> AsyncIterator[dict[str, Any]]:
    while True:
        item = await queue.get()
        if item is None:
            return
        if isinstance(item, BaseException):
            yield error_payload(item)
            return
        event: LoadProgress = item
        yield LoadProgressEvent(
            model_type=event.model_type,
            module=event.module,
            modules=event.modules,
            status=event.status,
        ).model_dump()


@router.post(
    "/v1/model/load",
    summary="Load a model, streaming progress as SSE",
    dependencies=REQUIRE_ADMIN,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "LoadProgressEvent stream"}
    },
)
async def load_model(body: ModelLoadRequest, request: Request) -> Any:
    state = get_state(request)
    container = state.container
    request_args = body.model_dump(exclude={"model_name", "draft_model", "skip_queue"})
    draft = body.draft_model.model_dump() if body.draft_model else None
    plan = container.plan_load(body.model_name, request=request_args, draft=draft)
    container.prepare(plan)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.create_task(_run_load(state, body, plan, queue))
    state.background_tasks.add(task)
    task.add_done_callback(state.background_tasks.discard)
    return sse_response(_progress_events(queue), state.config.network.sse_ping_interval, done=False)


@router.post("/v1/model/unload", summary="Unload the model", dependencies=REQUIRE_ADMIN)
async def unload_model(request: Request) -> None:
    started = time.perf_counter()
    await get_state(request).container.unload()
    request.state.log_extra = f"unloaded in {time.perf_counter() - started:.1f} s"
