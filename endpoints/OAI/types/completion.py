"""Request and response shapes of ``POST /v1/completions``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from common.sampling import SamplerRequest
from endpoints.OAI.types.common import ChoicesEnvelope, ResponseFormat, StreamOptions

Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(SamplerRequest):
    prompt: Prompt = Field(description="Text, a list of texts, token ids or lists of token ids.")
    model: str | None = Field(None, description="Ignored unless inline model loading is on.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, description="Choices per prompt, each its own job.")
    best_of: int | None = Field(None, ge=1, description="Accepted for compatibility; must be n.")
    echo: bool = Field(False, description="Put the prompt before the completion.")
    suffix: str | None = Field(None, description="Text after the completion (needs FIM support).")
    logprobs: int | None = Field(
        None, ge=0, description="Log probabilities of each token and this many alternatives."
    )
    user: str | None = None
    response_format: ResponseFormat | None = None
    images: list[Any] | None = Field(
        None, description="Not taken by completions (a 400 unless empty): send images in a chat."
    )

    @field_validator("logprobs", mode="before")
    @classmethod
    def _bool_logprobs(cls, value: object) -> object:
        if value is True:
            return 1
        if value is False:
            return None
        return value

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list of single prompts."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and all(isinstance(item, int) for item in prompt):
            return [list(prompt)]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]


class CompletionLogprobs(BaseModel):
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    text_offset: list[int] = []


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None
    stop_reason: str | int | None = Field(
        None, description="The stop string or token that ended it."
    )


class CompletionResponse(ChoicesEnvelope):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
