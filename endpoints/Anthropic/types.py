"""Request and response shapes of Anthropic's Messages API (``POST /v1/messages``).

Requests accept what Anthropic's clients send (``cache_control``, ``citations``, ``metadata`` and
other fields Serval has no use for are accepted and ignored); the sampler fields every Serval
API takes (``min_p``, ``repetition_penalty``, ...) are accepted too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.sampling import SamplerRequest


class _Block(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextBlockParam(_Block):
    type: Literal["text"]
    text: str


class ImageBlockParam(_Block):
    type: Literal["image"]
    source: dict[str, Any] = Field(default_factory=dict)


class DocumentBlockParam(_Block):
    type: Literal["document"]
    source: dict[str, Any] = Field(default_factory=dict)


class ToolUseBlockParam(_Block):
    type: Literal["tool_use"]
    id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=128)
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlockParam(_Block):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1, max_length=256)
    content: (
        str | list[Annotated[TextBlockParam | ImageBlockParam, Field(discriminator="type")]]
    ) = ""
    is_error: bool = False


class ThinkingBlockParam(_Block):
    type: Literal["thinking"]
    thinking: str
    signature: str = ""


class RedactedThinkingBlockParam(_Block):
    type: Literal["redacted_thinking"]
    data: str = ""


ContentBlockParam = Annotated[
    TextBlockParam
    | ImageBlockParam
    | DocumentBlockParam
    | ToolUseBlockParam
    | ToolResultBlockParam
    | ThinkingBlockParam
    | RedactedThinkingBlockParam,
    Field(discriminator="type"),
]


class MessageParam(BaseModel):
    """A turn; ``system`` is a mid-conversation system message, as Claude Code sends with its
    ``mid-conversation-system`` beta (text only)."""

    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlockParam]


class ToolParam(_Block):
    """A client tool: its name, what it does, and the JSON schema of its input."""

    type: Literal["custom"] | None = None
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoiceParam(BaseModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, description="The tool to call, for type 'tool'.")
    disable_parallel_tool_use: bool = False


class ThinkingParam(_Block):
    """``enabled`` (with a budget), ``adaptive`` or ``between_tools`` (the model decides), or
    ``disabled``."""

    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: int | None = Field(None, ge=0)


class OutputFormatParam(BaseModel):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfigParam(_Block):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: OutputFormatParam | None = None


class _PromptFields(BaseModel):
    """What a prompt is made of: the parts ``count_tokens`` counts."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str | None = Field(None, description="Ignored unless inline model loading is on.")
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlockParam] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: ThinkingParam | None = None


class MessagesRequest(SamplerRequest, _PromptFields):
    max_tokens: int = Field(
        ge=1,
        le=10_000_000,
        description="Most tokens to generate (Serval has no prompt cache for 0 to pre-warm).",
    )
    stop_sequences: list[str] | None = None
    stream: bool = False
    output_config: OutputConfigParam | None = Field(
        None, description="effort: the reasoning effort; format: a JSON schema for the answer."
    )
    metadata: dict[str, Any] | None = Field(None, description="Accepted and ignored.")


class CountTokensRequest(_PromptFields):
    pass


class CountTokensResponse(BaseModel):
    input_tokens: int


class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ThinkingBlock(BaseModel):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = Field("", description="Always empty: Serval signs no reasoning.")


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


ContentBlock = Annotated[TextBlock | ThinkingBlock | ToolUseBlock, Field(discriminator="type")]

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class Message(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentBlock]
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: Usage
