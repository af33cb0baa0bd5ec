"""Embedding model routes: list, card, load, unload."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from common.auth import KeyLevel
from endpoints.core.types import (
    EmbeddingLoadRequest,
    EmbeddingModelCard,
    EmbeddingModelParameters,
    LoadProgressEvent,
    ModelCard,
    ModelList,
)
from endpoints.dependencies import get_state, require_admin, require_api

router = APIRouter(tags=["Embeddings"])


@router.get("/v1/model/embedding/list", response_model=ModelList, summary="List embedding models")
async def list_embedding_models(
    request: Request, level: KeyLevel = Depends(require_api)
) -> ModelList:
    """Admin keys see every sentence-transformers folder in embedding_model_dir; api keys the
    loaded embedding model."""
    state = get_state(request)
    embeddings = state.embeddings
    if level >= KeyLevel.ADMIN:
        names = embeddings.list_models()
    else:
        names = [embeddings.name] if embeddings.name else []
    return ModelList(data=[ModelCard(id=name, created=int(state.started_at)) for name in names])


@router.get(
    "/v1/model/embedding",
    response_model=EmbeddingModelCard,
    summary="The loaded embedding model",
    dependencies=[Depends(require_api)],
)
async def current_embedding_model(request: Request) -> EmbeddingModelCard:
    state = get_state(request)
    name, embedder = await state.embeddings.current()
    info = embedder.info
    return EmbeddingModelCard(
        id=name,
        created=int(state.started_at),
        max_model_len=info.max_seq_len,
        parameters=EmbeddingModelParameters(
            dimensions=info.dimensions,
            max_seq_len=info.max_seq_len,
            device=info.device,
            matryoshka=info.matryoshka,
        ),
    )


@router.post(
    "/v1/model/embedding/load",
    response_model=LoadProgressEvent,
    summary="Load an embedding model",
    dependencies=[Depends(require_admin)],
)
async def load_embedding_model(body: EmbeddingLoadRequest, request: Request) -> LoadProgressEvent:
    """Answers when the model is loaded; loading the loaded model again answers at once."""
    await get_state(request).embeddings.load(body.embedding_model_name, body.embeddings_device)
    return LoadProgressEvent(model_type="embedding_model", module=1, modules=1, status="finished")


@router.post(
    "/v1/model/embedding/unload",
    summary="Unload the embedding model",
    dependencies=[Depends(require_admin)],
)
async def unload_embedding_model(request: Request) -> None:
    await get_state(request).embeddings.unload()
