"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's Messages API.

The body is translated into a chat request and planned, run and delivered on the chat path
(``endpoints/OAI/chat.py``), so templates, tools, grammars, reasoning and limits behave as
they do for ``/v1/chat/completions``. Clients authenticate with ``x-api-key`` (as Anthropic's
SDKs send it) or ``Authorization: Bearer``; ``anthropic-version`` is accepted, not required.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response

from backends.base import GenerationRequest
from common.chat.output import ChatOutput
from common.errors import ServalError
from common.generation import Completion, merge_streams
from common.model import Lease
from endpoints.Anthropic import shapes
from endpoints.Anthropic.translate import chat_request, counted_chat
from endpoints.Anthropic.types import (
    CountTokensRequest,
    CountTokensResponse,
    Message,
    MessagesRequest,
)
from endpoints.dependencies import REQUIRE_API, get_state
from endpoints.errors import anthropic_error
from endpoints.OAI.chat import ChatJobs, ChatPlan, check_chat_request, render_chat
from endpoints.OAI.delivery import StreamStyle, generation_route, serve
from endpoints.OAI.shapes import new_id
from endpoints.state import ServerState
from endpoints.streaming import error_payload

router = APIRouter(tags=["Anthropic"], dependencies=REQUIRE_API)


def stream_error(exc: BaseException) -> dict[str, Any]:
    """A failure after the stream started, as the `error` event Anthropic sends."""
    status = exc.status_code if isinstance(exc, ServalError) else 500
    return anthropic_error(status, error_payload(exc))


def _answer(
    plan: ChatPlan, message_id: str, body: MessagesRequest, completion: Completion
) -> Message:
    output = ChatOutput()
    output.add(plan.output.parser().feed(completion.text, final=True))
    return shapes.message(
        message_id, plan.model, completion, output, plan.prompt_tokens, body.stop_sequences
    )


async def _events(
    plan: ChatPlan, message_id: str, body: MessagesRequest, jobs: list[GenerationRequest]
) -> AsyncIterator[dict[str, Any]]:
    completion = Completion()
    parser = plan.output.parser()
    blocks = shapes.BlockStream()
    called = False
    start = Message(
        id=message_id,
        model=plan.model,
        content=[],
        usage=shapes.Usage(input_tokens=plan.prompt_tokens, output_tokens=0),
    )
    yield {"type": "message_start", "message": start.model_dump()}
    async with contextlib.aclosing(merge_streams(plan.runner, jobs)) as merged:
        async for _, chunk in merged:
            completion.add(chunk)
            output = parser.feed(chunk.text, final=chunk.finish_reason is not None)
            called = called or bool(output.tool_calls)
            for event in blocks.feed(output):
                yield event
    for event in blocks.close():
        yield event
    reason, sequence = shapes.stop_reason(completion, called, body.stop_sequences)
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": reason, "stop_sequence": sequence},
        "usage": shapes.usage(completion, plan.prompt_tokens).model_dump(),
    }
    yield {"type": "message_stop"}


class _MessageAnswer(ChatJobs):
    """The chat answer as an Anthropic message, or its stream of events."""

    style = StreamStyle(done=False, named=True, errors=stream_error)

    def __init__(self, body: MessagesRequest, plan: ChatPlan, lease: Lease, state: ServerState):
        super().__init__(plan, lease, state)
        self.body = body
        self.message_id = new_id("msg", "_")

    def streamed(self, jobs: list[GenerationRequest]) -> AsyncIterator[dict[str, Any]]:
        return _events(self.plan, self.message_id, self.body, jobs)

    def answered(self, completions: list[Completion]) -> Message:
        return _answer(self.plan, self.message_id, self.body, completions[0])


@generation_route(router, "/v1/messages", Message, "Create a message (Anthropic Messages API)")
async def create_message(body: MessagesRequest, request: Request, response: Response) -> Any:
    state = get_state(request)
    chat = chat_request(body)
    check_chat_request(chat, state)
    return await serve(
        request,
        response,
        chat,
        lambda lease: _MessageAnswer(body, ChatPlan(chat, lease), lease, state),
    )


@router.post(
    "/v1/messages/count_tokens",
    response_model=CountTokensResponse,
    summary="Count the tokens of a message's prompt (Anthropic Messages API)",
)
async def count_tokens(body: CountTokensRequest, request: Request) -> CountTokensResponse:
    """The prompt's tokens as ``usage.input_tokens`` of the same request would count them."""
    state = get_state(request)
    chat = counted_chat(body)
    check_chat_request(chat, state)
    async with state.container.use() as lease:
        rendered = await render_chat(chat, lease, state)
    return CountTokensResponse(input_tokens=len(rendered.ids))
