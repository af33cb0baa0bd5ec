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
from endpoints.dependencies import REQUIRE_ADMIN, REQUIRE_API, get_state, require_api

router = APIRouter(tags=["Embeddings"], dependencies=REQUIRE_API)  # admin routes add REQUIRE_ADMIN


@router.get("/v1/model/embedding/list", summary="List embedding models")
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


@router.get("/v1/model/embedding", summary="The loaded embedding model")
async def current_embedding_model(request: Request) -> EmbeddingModelCard:
    state = get_state(request)
    name, embedder = await state.embeddings.current()
    info = embedder.info
    return EmbeddingModelCard(
        id=name,
        created=int(state.started_at),
        max_model_len=info.max_seq_len,
        parameters=EmbeddingModelParameters.model_validate(info, from_attributes=True),
    )


@router.post(
    "/v1/model/embedding/load", summary="Load an embedding model", dependencies=REQUIRE_ADMIN
)
async def load_embedding_model(body: EmbeddingLoadRequest, request: Request) -> LoadProgressEvent:
    """Answers when the model is loaded; loading the loaded model again answers at once."""
    await get_state(request).embeddings.load(body.embedding_model_name, body.embeddings_device)
    return LoadProgressEvent(model_type="embedding_model", module=1, modules=1, status="finished")


@router.post(
    "/v1/model/embedding/unload",
    summary="Unload the embedding model",
    dependencies=REQUIRE_ADMIN,
)
async def unload_embedding_model(request: Request) -> None:
    await get_state(request).embeddings.unload()
