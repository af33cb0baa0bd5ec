"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's Messages API.

The body is translated into a chat request and planned, run and delivered on the chat path
(``endpoints/OAI/chat.py``), so templates, tools, grammars, reasoning and limits behave as
they do for ``/v1/chat/completions``. Clients authenticate with ``x-api-key`` (as Anthropic's
SDKs send it) or ``Authorization: Bearer``; ``anthropic-version`` is accepted, not required.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from backends.base import GenerationRequest
from common.chat_output import ChatOutput
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
from endpoints.dependencies import get_state, require_api
from endpoints.errors import anthropic_error
from endpoints.OAI.chat import ChatPlan, check_chat_request, render_chat, start_chat
from endpoints.OAI.delivery import deliver
from endpoints.OAI.shapes import new_id
from endpoints.streaming import error_payload

router = APIRouter(tags=["Anthropic"], dependencies=[Depends(require_api)])


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
    plan: ChatPlan,
    message_id: str,
    body: MessagesRequest,
    jobs: list[GenerationRequest],
    lease: Lease,
) -> AsyncIterator[dict[str, Any]]:
    completion = Completion()
    parser = plan.output.parser()
    blocks = shapes.BlockStream()
    called = False
    try:
        start = Message(
            id=message_id,
            model=plan.model,
            content=[],
            usage=shapes.Usage(input_tokens=plan.prompt_tokens, output_tokens=0),
        )
        yield {"type": "message_start", "message": start.model_dump()}
        async for _, chunk in merge_streams(plan.runner, jobs):
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
    finally:
        lease.release()


@router.post(
    "/v1/messages",
    response_model=Message,
    summary="Create a message (Anthropic Messages API)",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def create_message(body: MessagesRequest, request: Request, response: Response) -> Any:
    state = get_state(request)
    plan, lease, jobs = await start_chat(chat_request(body), request, state)
    message_id = new_id("msg", "_")
    return await deliver(
        request,
        response,
        state,
        lease,
        jobs,
        stream=body.stream,
        streamed=lambda: _events(plan, message_id, body, jobs, lease),
        answered=lambda completions: _answer(plan, message_id, body, completions[0]),
        runner=plan.runner,
        done=False,
        named=True,
        errors=stream_error,
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
