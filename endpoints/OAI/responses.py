"""``/v1/responses``: the OpenAI Responses API over the chat route's planning.

``POST`` translates the body into a chat request (endpoints/OAI/responses_input.py), plans it
as the chat route does and answers with output items (endpoints/OAI/responses_output.py),
whole or as the Responses event stream. With ``store`` (the default) the answer and its
conversation are kept per key (limits.responses_stored, limits.responses_ttl) for
``previous_response_id`` and ``GET``/``DELETE /v1/responses/{id}``; another key's answers are
not found.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response

from backends.base import GenerationRequest
from common.errors import BadRequestError, NotFoundError
from common.generation import Completion, merge_streams
from common.model import Lease
from endpoints.dependencies import REQUIRE_API, get_state, key_owner
from endpoints.OAI.chat import ChatJobs, ChatPlan, check_chat_request
from endpoints.OAI.delivery import StreamStyle, generation_route, serve
from endpoints.OAI.responses_input import chat_request, conversation_of, tool_namespaces
from endpoints.OAI.responses_output import Event, OutputBuilder, dumped
from endpoints.OAI.shapes import new_id, now, usage_of
from endpoints.OAI.types.chat import ChatMessage
from endpoints.OAI.types.responses import (
    DeletedResponse,
    IncompleteDetails,
    InputTokensDetails,
    ResponseError,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
    StoredResponse,
    TextFormat,
    TextOptions,
)
from endpoints.state import ServerState
from endpoints.streaming import error_payload

router = APIRouter(tags=["OpenAI"], dependencies=REQUIRE_API)


class _Responder(ChatJobs):
    """One Responses request being answered: the response object, its output and its storing."""

    def __init__(
        self,
        body: ResponsesRequest,
        plan: ChatPlan,
        lease: Lease,
        conversation: list[ChatMessage],
        state: ServerState,
        owner: str,
    ) -> None:
        super().__init__(plan, lease, state)
        self.body = body
        self.conversation = conversation
        self.owner = owner
        self.output = OutputBuilder(tool_namespaces(body))
        self.response = ResponseObject(
            id=new_id("resp", "_"),
            created_at=now(),
            status="in_progress",
            instructions=body.instructions,
            max_output_tokens=body.max_output_tokens,
            model=plan.model,
            output=[],
            parallel_tool_calls=body.parallel_tool_calls,
            previous_response_id=body.previous_response_id,
            reasoning=body.reasoning,
            store=body.store,
            temperature=body.temperature,
            text=(body.text or TextOptions(format=TextFormat(type="text"))).model_dump(
                exclude_none=True, by_alias=True
            ),
            tool_choice=(
                body.tool_choice.model_dump()
                if body.tool_choice is not None and not isinstance(body.tool_choice, str)
                else body.tool_choice or "auto"
            ),
            tools=[tool.model_dump(exclude_none=True) for tool in body.tools or []],
            top_p=body.top_p,
            metadata=body.metadata or {},
            user=body.user,
        )

    def error_event(self, exc: BaseException) -> Event:
        """The stream's last event after a failure: ``error`` with the OpenAI error body."""
        return self.output.event("error", **error_payload(exc))

    @property
    def style(self) -> StreamStyle:
        """Named events with this response's own error event; OpenAI's streams keep alive
        with comments (a ``ping`` event has no ``sequence_number``)."""
        return StreamStyle(done=False, named=True, errors=self.error_event, ping_events=False)

    def _lifecycle(self, kind: str) -> Event:
        return self.output.event(kind, response=dumped(self.response))

    def finish(self, completions: list[Completion]) -> list[Event]:
        """The last events; the response is complete (or cut off) and stored."""
        incomplete = completions[0].finish_reason == "length"
        events = self.output.finish(incomplete)
        usage = usage_of(completions, self.plan.prompt_tokens)
        self.response.output = list(self.output.items)
        self.response.status = "incomplete" if incomplete else "completed"
        if incomplete:
            self.response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
        else:
            self.response.completed_at = now()
        self.response.usage = ResponseUsage(
            input_tokens=usage.prompt_tokens,
            input_tokens_details=InputTokensDetails(
                cached_tokens=usage.prompt_tokens_details.cached_tokens
            ),
            output_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        )
        if self.body.store:
            conversation = [*self.conversation, self.output.message()]
            stored = StoredResponse(response=self.response, conversation=conversation)
            self.state.responses.put(self.owner, self.response.id, stored)
        kind = "response.incomplete" if incomplete else "response.completed"
        return [*events, self._lifecycle(kind)]

    def answered(self, completions: list[Completion]) -> ResponseObject:
        parser = self.plan.output.parser()
        self.output.feed(parser.feed(completions[0].text, final=True))
        self.finish(completions)
        return self.response

    async def streamed(self, jobs: list[GenerationRequest]) -> AsyncIterator[Event]:
        parser = self.plan.output.parser()
        completion = Completion()
        yield self._lifecycle("response.created")
        yield self._lifecycle("response.in_progress")
        try:
            async with contextlib.aclosing(merge_streams(self.plan.runner, jobs)) as merged:
                async for _, chunk in merged:
                    completion.add(chunk)
                    delta = parser.feed(chunk.text, final=chunk.finish_reason is not None)
                    for event in self.output.feed(delta):
                        yield event
            for event in self.finish([completion]):
                yield event
        except Exception as exc:
            self.response.status = "failed"
            self.response.output = list(self.output.items)
            message = error_payload(exc)["error"]["message"]
            self.response.error = ResponseError(code="server_error", message=message)
            yield self._lifecycle("response.failed")
            raise  # then the stream's error event (error_event)


def _earlier(body: ResponsesRequest, state: ServerState, owner: str) -> list[ChatMessage]:
    if body.previous_response_id is None:
        return []
    stored = state.responses.get(owner, body.previous_response_id)
    if stored is None:
        raise BadRequestError(
            f"Previous response with id {body.previous_response_id!r} not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return stored.conversation


@generation_route(
    router, "/v1/responses", ResponseObject, "Create a response (OpenAI Responses API)"
)
async def create_response(body: ResponsesRequest, request: Request, response: Response) -> Any:
    state = get_state(request)
    owner = key_owner(request)
    conversation = conversation_of(body, _earlier(body, state, owner))
    chat = chat_request(body, conversation)
    check_chat_request(chat, state)

    def answer_for(lease: Lease) -> _Responder:
        return _Responder(body, ChatPlan(chat, lease), lease, conversation, state, owner)

    return await serve(request, response, chat, answer_for)


def _stored(request: Request, response_id: str) -> StoredResponse:
    stored = get_state(request).responses.get(key_owner(request), response_id)
    if stored is None:
        raise NotFoundError(f"No response with id {response_id!r}.", param="response_id")
    return stored


@router.get("/v1/responses/{response_id}", response_model=ResponseObject, summary="Get a response")
async def get_response(response_id: str, request: Request) -> ResponseObject:
    return _stored(request, response_id).response


@router.delete(
    "/v1/responses/{response_id}", response_model=DeletedResponse, summary="Delete a response"
)
async def delete_response(response_id: str, request: Request) -> DeletedResponse:
    if not get_state(request).responses.delete(key_owner(request), response_id):
        raise NotFoundError(f"No response with id {response_id!r}.", param="response_id")
    return DeletedResponse(id=response_id)
