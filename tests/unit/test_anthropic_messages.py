"""The Anthropic Messages body as a chat request, and its stream's named events and error event
(no model: the translation and the SSE writer alone)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from common.chat.output import OutputDelta
from common.chat.tools.calls import ToolCallDelta
from common.errors import BadRequestError, GenerationError
from endpoints.Anthropic.messages import stream_error
from endpoints.Anthropic.shapes import BlockStream
from endpoints.Anthropic.translate import chat_request
from endpoints.Anthropic.types import MessagesRequest
from endpoints.streaming import sse_response
from tests.support.server import ROOT


def test_claude_code_body_becomes_the_chat_it_stands_for() -> None:
    """The body Claude Code 2.1.197 sent: its mid-conversation ``system`` turn stays in place."""
    recorded = json.loads(
        (ROOT / "tests/fixtures/clients/claude_code_messages.json").read_text(encoding="utf-8")
    )
    chat = chat_request(MessagesRequest.model_validate(recorded["body"]))
    roles = [m.role for m in chat.messages]
    assert roles == ["system", "user", "system", "assistant", "user"]
    assert str(chat.messages[2].content).startswith("Available agent types")
    assert [t.function.name for t in chat.tools or []] == ["Agent", "Bash", "Edit", "Read"]
    assert chat.enable_thinking is True and chat.reasoning_effort == "high"  # adaptive, effort
    assert chat.stream is True and chat.max_tokens == 200


def test_a_system_turn_holds_text_only() -> None:
    body = {
        "max_tokens": 4,
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "system", "content": [{"type": "image", "source": {}}]},
        ],
    }
    with pytest.raises(BadRequestError, match="system message cannot hold a image block"):
        chat_request(MessagesRequest.model_validate(body))
    body["messages"] = body["messages"][:2]
    chat = chat_request(MessagesRequest.model_validate(body))
    assert [m.role for m in chat.messages] == ["user", "system"]


def test_tool_choice_and_stop_sequences_map_to_their_chat_fields() -> None:
    body = MessagesRequest.model_validate(
        {
            "max_tokens": 4,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "stop_sequences": ["END"],
            "min_p": 0.1,
            "speculative_ngram": True,
        }
    )
    chat = chat_request(body)
    assert chat.tool_choice == "required" and chat.parallel_tool_calls is False
    assert chat.stop == ["END"] and chat.min_p == 0.1
    assert chat.not_applied == ("speculative_ngram",)  # named to the client, as on every route


def test_blocks_open_and_close_as_the_output_changes_kind() -> None:
    blocks = BlockStream()
    events = blocks.feed(OutputDelta(reasoning="hm", content="Hi"))
    events += blocks.feed(OutputDelta(tool_calls=[ToolCallDelta(0, '{"a"', "call_1", "f")]))
    events += blocks.feed(OutputDelta(tool_calls=[ToolCallDelta(0, ": 1}")]))
    events += blocks.close()
    kinds = [(e["type"], e["index"]) for e in events]
    assert kinds == [
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
    ]
    assert events[7]["delta"] == {"type": "input_json_delta", "partial_json": '{"a"'}


def test_a_failure_mid_stream_is_a_named_error_event() -> None:
    async def failing() -> AsyncIterator[dict[str, Any]]:
        yield {"type": "message_start"}
        raise GenerationError("the engine failed")

    app = FastAPI()

    @app.get("/stream")
    async def stream() -> Any:
        return sse_response(failing(), 0, done=False, named=True, errors=stream_error)

    text = TestClient(app).get("/stream").text
    assert "event: message_start\n" in text and "[DONE]" not in text
    error = text.split("event: error\ndata: ", 1)[1].splitlines()[0]
    assert json.loads(error) == {
        "type": "error",
        "error": {"type": "api_error", "message": "the engine failed"},
    }
