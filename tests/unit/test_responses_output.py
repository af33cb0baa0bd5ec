"""Output items of a Responses answer from the chat parser's deltas, and their stream events
(a failure in the middle of the stream included)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest

from backends.base import GenerationChunk
from common.chat.output import OutputDelta
from common.chat.plan import OutputPlan
from common.chat.tools.calls import ToolCallDelta
from common.errors import BadRequestError
from endpoints.OAI.responses import _Responder
from endpoints.OAI.responses_input import chat_request, conversation_of, tool_namespaces
from endpoints.OAI.responses_output import OutputBuilder
from endpoints.OAI.types.responses import ResponsesRequest
from tests.support.server import ROOT


def test_reasoning_then_a_call_with_only_whitespace_between_opens_no_message() -> None:
    builder = OutputBuilder()
    events = builder.feed(OutputDelta(reasoning="Look it up."))
    events += builder.feed(OutputDelta(content="\n\n"))
    events += builder.feed(OutputDelta(tool_calls=[ToolCallDelta(0, "", "call_1", "lookup")]))
    events += builder.feed(OutputDelta(tool_calls=[ToolCallDelta(0, '{"q": "x"}')]))
    events += builder.finish(incomplete=False)
    assert [item.type for item in builder.items] == ["reasoning", "function_call"]
    assert [event["type"] for event in events] == [
        "response.output_item.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert events[-1]["item"]["arguments"] == '{"q": "x"}'
    assert events[-1]["item"]["status"] == "completed"
    message = builder.message()
    assert message.content is None and message.reasoning_content == "Look it up."
    assert message.tool_calls and message.tool_calls[0].id == "call_1"


def test_text_cut_short_is_an_incomplete_message() -> None:
    builder = OutputBuilder()
    events = builder.feed(OutputDelta(content="Par"))
    events += builder.finish(incomplete=True)
    assert [event["type"] for event in events] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert events[0]["item"]["content"] == [] and events[3]["text"] == "Par"
    assert builder.items[0].status == "incomplete"


def test_an_empty_answer_is_one_empty_message() -> None:
    builder = OutputBuilder()
    builder.finish(incomplete=False)
    assert [item.type for item in builder.items] == ["message"]
    assert builder.message().content is None


class _FailingRunner:
    """A job that writes one piece of text, then fails as an engine would."""

    async def generate(self, request: object) -> AsyncIterator[GenerationChunk]:
        yield GenerationChunk(text="Par", token_ids=[1])
        raise RuntimeError("the engine failed")


def test_a_failure_mid_stream_sends_response_failed_then_the_error() -> None:
    plan = SimpleNamespace(
        model="m", output=OutputPlan(None, None, None), runner=_FailingRunner(), prompt_tokens=3
    )
    body = ResponsesRequest(input="Capital of France?")
    lease, state = SimpleNamespace(), SimpleNamespace()
    responder = _Responder(body, plan, lease, [], state, "owner")  # type: ignore[arg-type]

    async def run() -> list[dict]:
        events = []
        with pytest.raises(RuntimeError):
            async for event in responder.streamed([object()]):  # type: ignore[list-item]
                events.append(event)
        return events

    events = asyncio.run(run())
    assert [event["type"] for event in events][:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in [event["type"] for event in events]
    failed = events[-1]
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "server_error"
    error = responder.error_event(RuntimeError("the engine failed"))
    assert error["type"] == "error" and error["sequence_number"] == failed["sequence_number"] + 1
    assert error["error"]["code"] == "generation_failed"


def test_codex_namespace_tools_are_flattened_and_calls_name_their_namespace() -> None:
    """Codex 0.171.0 groups its sub-agent tools in a ``namespace`` tool: the model sees them as
    function tools, and a call to one names the namespace back, as Codex routes it."""
    recorded = json.loads((ROOT / "tests/fixtures/clients/codex_responses.json").read_text())
    body = ResponsesRequest.model_validate(recorded["body"])
    chat = chat_request(body, conversation_of(body, []))
    names = [tool.function.name for tool in chat.tools or []]
    assert names == ["exec_command", "view_image", "close_agent", "resume_agent"]
    assert chat.stream is True
    namespaces = tool_namespaces(body)
    assert namespaces == {"close_agent": "multi_agent_v1", "resume_agent": "multi_agent_v1"}
    builder = OutputBuilder(namespaces)
    events = builder.feed(OutputDelta(tool_calls=[ToolCallDelta(0, "{}", "call_1", "close_agent")]))
    events += builder.feed(
        OutputDelta(tool_calls=[ToolCallDelta(1, "{}", "call_2", "exec_command")])
    )
    events += builder.finish(incomplete=False)
    done = [event["item"] for event in events if event["type"] == "response.output_item.done"]
    assert [(item["name"], item["namespace"]) for item in done] == [
        ("close_agent", "multi_agent_v1"),
        ("exec_command", None),
    ]


def test_two_functions_of_one_name_are_refused() -> None:
    function = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    space = {"type": "namespace", "name": "n", "description": "", "tools": [function]}
    body = ResponsesRequest.model_validate({"input": "x", "tools": [function, space]})
    with pytest.raises(BadRequestError, match="Two function tools are named 'f'"):
        chat_request(body, conversation_of(body, []))
