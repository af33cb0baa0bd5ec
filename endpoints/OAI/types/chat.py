"""Request and response shapes of ``POST /v1/chat/completions``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from common.sampling import SamplerRequest
from endpoints.OAI.types.common import ChoicesEnvelope, ResponseFormat, StreamOptions


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    url: str
    detail: str | None = None


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = TextPart | ImagePart


class FunctionCall(BaseModel):
    name: str
    arguments: str = "{}"


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"] = "user"
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class FunctionDefinition(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"] = "function"
    function: NamedFunction


class ReasoningOptions(BaseModel):
    """OpenRouter's ``reasoning`` object: the same as the flat fields it stands for."""

    effort: Literal["minimal", "low", "medium", "high"] | None = None
    enabled: bool | None = None
    max_tokens: int | None = Field(None, ge=0)


class ChatCompletionRequest(SamplerRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = Field(None, description="Ignored unless inline model loading is on.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    response_prefix: str | None = Field(None, description="Text the answer starts with.")
    template_vars: dict[str, Any] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("template_vars", "chat_template_kwargs"),
        description="Extra variables for the chat template.",
    )
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    functions: list[FunctionDefinition] | None = None
    function_call: Literal["none", "auto"] | NamedFunction | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    enable_thinking: bool | None = None
    reasoning_budget_tokens: int | None = Field(
        None,
        validation_alias=AliasChoices(
            "reasoning_budget_tokens",
            "reasoning_budget",
            "thinking_budget",
            "thinking_token_budget",
        ),
        description="Most reasoning tokens before the block is closed (absent or negative: "
        "model.reasoning_budget_tokens).",
    )
    reasoning: ReasoningOptions | None = None
    user: str | None = None


class ChatLogprobAlternative(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatLogprob(ChatLogprobAlternative):
    top_logprobs: list[ChatLogprobAlternative] = []


class ChatChoiceLogprobs(BaseModel):
    """OpenAI requires both keys (each may be null); Serval never refuses, so ``refusal`` is
    always null."""

    content: list[ChatLogprob] | None = None
    refusal: list[ChatLogprob] | None = None


ChatFinishReason = Literal["stop", "length", "tool_calls", "function_call"]


def _absent(value: object) -> bool:
    return value is None


class ResponseMessage(BaseModel):
    """OpenAI's assistant message: ``content`` and ``refusal`` are always sent (null when
    empty); ``tool_calls`` and ``function_call`` only when there is a call, as the spec allows
    no null for them."""

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = Field(None, description="Always null: Serval does not refuse.")
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = Field(None, exclude_if=_absent)
    function_call: FunctionCall | None = Field(
        None,
        exclude_if=_absent,
        description="The call, for requests that used the legacy functions field.",
    )


class ChatChoice(BaseModel):
    index: int
    message: ResponseMessage
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: ChatFinishReason | None = None
    stop_reason: str | int | None = None


class ChatCompletionResponse(ChoicesEnvelope):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]


class _SetFieldsOnly(BaseModel):
    """Stream pieces send only the fields they carry, as OpenAI does (SDKs merge by key)."""

    @model_serializer(mode="wrap")
    def _only_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class DeltaFunctionCall(_SetFieldsOnly):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(_SetFieldsOnly):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall | None = None


class ChatDelta(_SetFieldsOnly):
    """A stream delta: only the fields that changed are sent."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None
    function_call: DeltaFunctionCall | None = None


class ChatStreamChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: ChatFinishReason | None = None


class ChatCompletionChunk(ChoicesEnvelope):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatStreamChoice]
