"""``POST /v1/embeddings``: vectors for texts, from the embedding model."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Depends, Request

from common.errors import BadRequestError, UnsupportedError
from endpoints.dependencies import get_state, require_api
from endpoints.OAI.types.embedding import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from endpoints.streaming import cancel_on_disconnect

router = APIRouter(tags=["OpenAI"], dependencies=[Depends(require_api)])

MAX_INPUTS = 2048  # OpenAI's limit per request


def _texts(body: EmbeddingRequest) -> list[str]:
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise BadRequestError("input is empty: send a text or a list of texts.", param="input")
    if len(texts) > MAX_INPUTS:
        raise BadRequestError(f"At most {MAX_INPUTS} texts per request.", param="input")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise UnsupportedError(
                "Token arrays are not supported: send the texts themselves.", param="input"
            )
        if not text:
            raise BadRequestError(f"input[{index}] is an empty string.", param="input")
    return texts  # type: ignore[return-value]


@router.post("/v1/embeddings", response_model=EmbeddingResponse, summary="Create embeddings")
async def create_embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
    texts = _texts(body)
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
