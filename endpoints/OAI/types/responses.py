"""Request and response shapes of ``POST /v1/responses`` (the OpenAI Responses API).

Input items and tools are read loosely (``type`` is any string) so that an item or tool Serval
does not run is refused by name with a 400, not by a pydantic union error; the answer shapes
follow the official openai SDK's ``openai.types.responses`` models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.sampling import SamplerRequest
from endpoints.OAI.types.chat import ChatMessage

ItemStatus = Literal["in_progress", "completed", "incomplete"]
Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class InputContent(BaseModel):
    """A part of an input message or of a call's output: ``input_text`` (or the ``output_text``
    and ``refusal`` of an earlier answer sent back), ``input_image`` or ``input_file``."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    text: str | None = None
    refusal: str | None = None
    image_url: str | None = None


class InputItem(BaseModel):
    """One input item: a ``message`` (the default type), an earlier ``function_call`` or
    ``reasoning`` item sent back, or a ``function_call_output``."""

    model_config = ConfigDict(extra="allow")

    type: str = Field("message", max_length=64)
    id: str | None = None
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[InputContent] | None = None
    call_id: str | None = Field(None, max_length=256)
    name: str | None = Field(None, max_length=128)
    arguments: str | None = None
    output: str | list[InputContent] | None = None
    summary: list[InputContent] | None = None


class ResponsesTool(BaseModel):
    """A tool; Serval runs ``function`` tools (flat: name, description, parameters, strict) and
    ``namespace`` tools, a named group of function tools (as Codex sends its sub-agent tools)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    name: str | None = Field(None, min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    tools: list[ResponsesTool] | None = Field(
        None, max_length=128, description="A namespace's function tools."
    )


class ToolChoiceObject(BaseModel):
    """``{"type": "function", "name": ...}``; other types are refused by name."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    name: str | None = Field(None, max_length=128)


class TextFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    effort: Effort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class ResponsesRequest(SamplerRequest):
    """The body of ``POST /v1/responses``; Serval's sampler fields (top_k, min_p, ...) apply
    here as on the chat route."""

    model: str | None = Field(None, description="Ignored unless inline model loading is on.")
    input: str | list[InputItem] = Field(description="A user message, or a list of items.")
    instructions: str | None = Field(None, description="A system message before the input.")
    tools: list[ResponsesTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceObject | None = None
    parallel_tool_calls: bool = True
    text: TextOptions | None = None
    reasoning: ReasoningOptions | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=10_000_000)
    reasoning_budget_tokens: int | None = Field(
        None, description="Serval: most reasoning tokens, as on the chat route."
    )
    previous_response_id: str | None = Field(None, max_length=128)
    store: bool = Field(True, description="Keep the answer for previous_response_id and GET.")
    stream: bool = False
    metadata: dict[str, str] | None = Field(None, max_length=16)
    include: list[str] | None = Field(None, max_length=16, description="Accepted; ignored.")
    background: bool = False
    conversation: str | dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = []
    logprobs: list[dict[str, Any]] = []


class MessageItem(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningItem(BaseModel):
    """The model's reasoning, as ``content`` text (Serval writes no separate summary)."""

    type: Literal["reasoning"] = "reasoning"
    id: str
    status: ItemStatus
    summary: list[dict[str, Any]] = []
    content: list[ReasoningText]


class FunctionCallItem(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    status: ItemStatus
    call_id: str
    name: str
    arguments: str
    namespace: str | None = Field(None, description="The namespace tool ``name`` is in, if any.")


OutputItem = Annotated[MessageItem | ReasoningItem | FunctionCallItem, Field(discriminator="type")]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = Field(0, description="Not counted apart by Serval: always 0.")


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails = OutputTokensDetails()
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseError(BaseModel):
    code: str
    message: str


class ResponseObject(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    completed_at: int | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool
    previous_response_id: str | None = None
    reasoning: ReasoningOptions | None = None
    store: bool
    temperature: float | None = None
    text: dict[str, Any]
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    top_p: float | None = None
    truncation: Literal["auto", "disabled"] = "disabled"
    usage: ResponseUsage | None = None
    metadata: dict[str, str] = {}
    user: str | None = None


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True


class StoredResponse(BaseModel):
    """A stored answer and the conversation it ended (its instructions left out, as
    ``previous_response_id`` does not carry them over)."""

    response: ResponseObject
    conversation: list[ChatMessage]
