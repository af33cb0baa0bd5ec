"""Types shared by the OpenAI completion and chat routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class StreamOptions(BaseModel):
    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | bool = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """``text``, ``json_object`` (any JSON object) or ``json_schema`` (that schema)."""

    type: Literal["text", "json_object", "json_schema", "json"]
    json_schema: JsonSchemaFormat | None = None


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = PromptTokensDetails()
    prompt_time: float | None = Field(None, description="Seconds spent on the prompt.")
    completion_time: float | None = Field(None, description="Seconds spent generating.")
    completion_tokens_per_sec: float | None = None


def schema_of(response_format: ResponseFormat | None) -> dict[str, Any] | None:
    """The JSON schema a response_format asks for, or None."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type in ("json_object", "json"):
        return {"type": "object"}
    if response_format.json_schema is None:
        return {"type": "object"}
    schema = response_format.json_schema.schema_
    if schema is True or schema == {}:
        return {"type": "object"}
    return schema if isinstance(schema, dict) else {"not": {}}


class ChoicesEnvelope(BaseModel):
    """The fields around the choices of a completion, a chat completion and a chat chunk, in
    OpenAI's order; each subclass narrows ``object`` and ``choices`` to its own."""

    id: str
    object: str
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[Any]
    usage: Usage | None = None
