"""``POST /v1/embeddings``: request and response shapes (OpenAI's)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, protected_namespaces=())

    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text, a list of texts, or texts as token ids of OpenAI's cl100k_base "
        "(one list of ids, or a list of them), as tiktoken and langchain write them."
    )
    model: str | None = Field(None, description="Ignored: the loaded embedding model answers.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: little-endian float32 bytes."
    )
    dimensions: int | None = Field(
        None, ge=1, description="Shorter vectors, for models trained for it (Matryoshka)."
    )
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
