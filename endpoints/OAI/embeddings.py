"""``POST /v1/embeddings``: vectors for texts, from the embedding model."""

from __future__ import annotations

import asyncio
import base64

from fastapi import APIRouter, Request

from common.errors import BadRequestError
from common.openai_tokens import decode_openai_tokens
from endpoints.dependencies import REQUIRE_API, get_state
from endpoints.OAI.types.embedding import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from endpoints.streaming import cancel_on_disconnect

router = APIRouter(tags=["OpenAI"], dependencies=REQUIRE_API)

MAX_INPUTS = 2048  # OpenAI's limit per request


def _inputs(body: EmbeddingRequest) -> list[str | list[int]]:
    """The request's texts, or its texts as token arrays (one list of ids is one text)."""
    given = body.input
    if isinstance(given, str):
        return [given]
    if given and all(isinstance(item, int) for item in given):
        return [[item for item in given if isinstance(item, int)]]
    return [item for item in given if isinstance(item, str | list)]


def _texts(body: EmbeddingRequest) -> list[str]:
    """Texts to embed; token arrays are decoded (see common/openai_tokens.py)."""
    inputs = _inputs(body)
    if not inputs:
        raise BadRequestError("input is empty: send a text or a list of texts.", param="input")
    if len(inputs) > MAX_INPUTS:
        raise BadRequestError(f"At most {MAX_INPUTS} texts per request.", param="input")
    texts = [
        item if isinstance(item, str) else decode_openai_tokens(item, param=f"input[{index}]")
        for index, item in enumerate(inputs)
    ]
    for index, text in enumerate(texts):
        if not text:
            raise BadRequestError(f"input[{index}] is empty.", param="input")
    return texts


@router.post("/v1/embeddings", response_model=EmbeddingResponse, summary="Create embeddings")
async def create_embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
    texts = await asyncio.to_thread(_texts, body)
    embeddings = get_state(request).embeddings
    result = await cancel_on_disconnect(request, embeddings.embed(texts, body.dimensions))
    if body.encoding_format == "base64":
        data = [
            Embedding(embedding=base64.b64encode(row.astype("<f4").tobytes()).decode(), index=i)
            for i, row in enumerate(result.vectors)
        ]
    else:
        data = [Embedding(embedding=row.tolist(), index=i) for i, row in enumerate(result.vectors)]
    request.state.log_extra = f"texts={len(texts)} tokens={result.prompt_tokens}"
    return EmbeddingResponse(
        data=data,
        model=result.model,
        usage=EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
    )
