"""``POST /v1/chat/completions``: messages through the model's chat template."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response

from backends.base import NO_IMAGES, GenerationRequest, ImageInput
from common.chat.output import ChatOutput
from common.chat.plan import Constraints, OutputPlan, generation_controls, output_plan
from common.chat.prompt import ChatPrompt, add_bos_for, check_message_count, render_prompt
from common.chat.reasoning_budget import BudgetedRunner
from common.chat.tools.choice import ToolChoice
from common.chat.tools.formats import ToolFormat, tool_format
from common.errors import BadRequestError, UnsupportedError
from common.generation import Completion, JobOptions, JobRunner, merge_streams
from common.grammar import GrammarBounds, compile_grammar
from common.images import load_images
from common.jobs import jobs_for, prompt_ids, sampling
from common.model import Lease
from common.tokenizing import check_chars_fit
from endpoints.dependencies import REQUIRE_API, get_state
from endpoints.OAI.chat_shapes import chat_delta, finish_reason, response_message
from endpoints.OAI.chat_tools import tool_choice_of, uses_legacy_functions
from endpoints.OAI.delivery import OPENAI_STREAM, generation_route, serve
from endpoints.OAI.shapes import chat_logprobs, fingerprint, new_id, now, usage_of
from endpoints.OAI.types.chat import (
    ChatChoice,
    ChatChoiceLogprobs,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatMessage,
    ChatStreamChoice,
    ImagePart,
)
from endpoints.OAI.types.common import Usage, schema_of
from endpoints.state import ServerState

router = APIRouter(tags=["OpenAI"], dependencies=REQUIRE_API)
Envelope = TypeVar("Envelope", ChatCompletionResponse, ChatCompletionChunk)


def _message_dict(message: ChatMessage) -> dict[str, Any]:
    """A message as the template sees it: multi-part text joined, None fields left out; with
    images, its parts as HF chat templates take them (``{"type": "image"}`` for each image)."""
    data = message.model_dump(exclude_none=True)
    content = message.content
    if isinstance(content, list):
        if any(isinstance(part, ImagePart) for part in content):
            data["content"] = [
                {"type": "image"}
                if isinstance(part, ImagePart)
                else {"type": "text", "text": part.text}
                for part in content
            ]
        else:
            data["content"] = "".join(part.text for part in content)  # type: ignore[union-attr]
    return data


def _image_urls(body: ChatCompletionRequest) -> list[str]:
    """The URLs of the chat's image parts, in the order the template meets them."""
    return [
        part.image_url.url
        for message in body.messages
        if isinstance(message.content, list)
        for part in message.content
        if isinstance(part, ImagePart)
    ]


def _text_chars(messages: list[dict[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, list):
            total += sum(len(part.get("text", "")) for part in content)
        else:
            total += len(content)
    return total


async def _images(
    body: ChatCompletionRequest, lease: Lease, state: ServerState
) -> list[ImageInput]:
    """The chat's images, checked (a model without a vision part refuses them unread)."""
    urls = _image_urls(body)
    if not urls:
        return []
    if not lease.info().vision:
        raise UnsupportedError(NO_IMAGES, param="messages")
    return await load_images(urls, state.config)


def check_chat_request(body: ChatCompletionRequest, state: ServerState) -> None:
    limits = state.config.limits
    if body.n > limits.max_n:
        raise BadRequestError(f"n may be at most {limits.max_n}.", param="n")
    if body.top_logprobs is not None and body.top_logprobs > limits.max_logprobs:
        raise BadRequestError(
            f"top_logprobs may be at most {limits.max_logprobs}.", param="top_logprobs"
        )
    check_message_count(len(body.messages), limits)
    for name, offered in (("tools", body.tools), ("functions", body.functions)):
        if offered and len(offered) > limits.max_tools:
            raise BadRequestError(
                f"At most {limits.max_tools} {name} per request (limits.max_tools).", param=name
            )


def _chat_prompt(
    body: ChatCompletionRequest,
    state: ServerState,
    tool_request: ToolChoice | None,
    fmt: ToolFormat,
) -> ChatPrompt:
    config = state.config.model
    variables = dict(config.template_vars_default)
    effort, thinking = body.reasoning_effort, body.enable_thinking
    if body.reasoning is not None:
        effort = effort or body.reasoning.effort
        thinking = thinking if thinking is not None else body.reasoning.enabled
    for name, value in (("reasoning_effort", effort), ("enable_thinking", thinking)):
        if value is not None:
            variables[name] = value
    variables.update(body.template_vars)
    variables.update(config.template_vars_force)
    # tool_choice "none": the model is not told about the tools
    offered = tool_request is not None and tool_request.mode != "none"
    return ChatPrompt(
        messages=[_message_dict(m) for m in body.messages],
        add_generation_prompt=body.add_generation_prompt,
        continue_final_message=body.continue_final_message,
        response_prefix=body.response_prefix,
        tools=[t.model_dump(exclude_none=True) for t in body.tools or []] if offered else None,
        functions=[f.model_dump(exclude_none=True) for f in body.functions or []]
        if offered
        else None,
        variables=variables,
        tool_format=fmt,
    )


def _budget_tokens(body: ChatCompletionRequest, state: ServerState) -> int | None:
    for tokens in (
        body.reasoning_budget_tokens,
        body.reasoning.max_tokens if body.reasoning else None,
    ):
        if tokens is not None and tokens >= 0:
            return tokens
    return state.config.model.reasoning_budget_tokens


class ChatPlan:
    """One chat request's answer being made: its id, the output parsing and the job runner.

    The Anthropic Messages and OpenAI Responses routes plan through this too (they translate
    their bodies into a :class:`ChatCompletionRequest`), so every chat API shares one path."""

    def __init__(self, body: ChatCompletionRequest, lease: Lease) -> None:
        self.body = body
        self.backend = lease.backend
        self.model = lease.name
        self.id = new_id("chatcmpl")
        self.created = now()
        self.prompt_tokens = 0
        self.legacy = uses_legacy_functions(body)
        self.output = OutputPlan(None, None, None)
        self.runner: JobRunner = lease

    @property
    def logprobs(self) -> int | None:
        return (self.body.top_logprobs or 0) if self.body.logprobs else None


@dataclass(frozen=True)
class RenderedChat:
    """A chat's prompt as the template wrote it, its token ids, and the tools it offers."""

    prompt: str
    ids: list[int]
    tool_request: ToolChoice | None
    fmt: ToolFormat
    images: tuple[ImageInput, ...] = ()


async def render_chat(
    body: ChatCompletionRequest, lease: Lease, state: ServerState
) -> RenderedChat:
    """Render and tokenize the chat, checked against the model's limits (nothing generated:
    token-counting routes call this alone)."""
    if lease.template is None:
        raise BadRequestError(
            "The loaded model has no chat template; set one with POST /v1/template/switch "
            "or model.prompt_template.",
            code="no_chat_template",
        )
    tool_request = tool_choice_of(body)
    fmt = tool_format(state.config.model.tool_format, lease.template.source)
    chat = _chat_prompt(body, state, tool_request, fmt)
    text_chars = _text_chars(chat.messages)
    check_chars_fit(text_chars, lease, state.config.limits, param="messages", what="chat")
    images = await _images(body, lease, state)
    prompt = await render_prompt(
        lease.template,
        chat,
        lease.special_tokens,
        state.config.limits.template_timeout,
    )
    ids = await prompt_ids(
        lease,
        prompt,
        state.config.limits,
        add_bos=add_bos_for(prompt, lease.special_tokens),
        param="messages",
        what="chat prompt (as the template rendered it)",
    )
    if images:
        ids = await lease.prepare_images(ids, images)
    return RenderedChat(prompt, ids, tool_request, fmt, tuple(images))


async def plan_chat_jobs(
    plan: ChatPlan, lease: Lease, state: ServerState, request_id: str
) -> list[GenerationRequest]:
    """Render, tokenize and constrain the chat; one job per choice (``n``)."""
    body = plan.body
    params = sampling(body, state.overrides.preset, lease, state.config.limits)
    rendered = await render_chat(body, lease, state)
    ids = rendered.ids
    plan.prompt_tokens = len(ids)
    plan.output = output_plan(
        rendered.prompt, state.config.model, rendered.tool_request, rendered.fmt
    )
    constraints = Constraints(
        schema_of(body.response_format) or params.json_schema,
        params.regex_pattern,
        params.grammar_string,
        GrammarBounds.from_limits(state.config.limits),
    )
    grammar, budget = await compile_grammar(
        generation_controls,
        plan.output,
        constraints,
        lease,
        _budget_tokens(body, state),
        bounds=constraints.bounds,
    )
    if budget is not None:
        plan.runner = BudgetedRunner(lease, budget)
    return await jobs_for(
        lease,
        request_id,
        [ids],
        body.n,
        params,
        state.config.limits,
        JobOptions(logprobs=plan.logprobs, grammar=grammar, images=rendered.images),
    )


class ChatJobs:
    """A chat request's :class:`ChatPlan` and its jobs: the part of an answer every chat API
    shares. Each API's answer (``delivery.Answer``) adds its shapes: its ``style``,
    ``streamed`` and ``answered``, as :class:`ChatAnswer` does for chat completions."""

    def __init__(self, plan: ChatPlan, lease: Lease, state: ServerState) -> None:
        self.plan, self.lease, self.state = plan, lease, state

    @property
    def prompt_tokens(self) -> int:
        return self.plan.prompt_tokens

    @property
    def runner(self) -> JobRunner:
        return self.plan.runner

    async def jobs(self, request_id: str) -> list[GenerationRequest]:
        return await plan_chat_jobs(self.plan, self.lease, self.state, request_id)


class ChatAnswer(ChatJobs):
    """The answer of ``/v1/chat/completions``."""

    style = OPENAI_STREAM

    def streamed(self, jobs: list[GenerationRequest]) -> AsyncIterator[ChatCompletionChunk]:
        return _stream(self.plan, jobs)

    def answered(self, completions: list[Completion]) -> ChatCompletionResponse:
        return _response(self.plan, completions)


def _response(plan: ChatPlan, completions: list[Completion]) -> ChatCompletionResponse:
    choices = []
    for index, completion in enumerate(completions):
        output = ChatOutput()
        output.add(plan.output.parser().feed(completion.text, final=True))
        logprobs = None
        if plan.logprobs is not None:
            logprobs = ChatChoiceLogprobs(content=chat_logprobs(completion.logprobs))
        reason = finish_reason(completion.finish_reason, bool(output.tool_calls), plan.legacy)
        choices.append(
            ChatChoice(
                index=index,
                message=response_message(output, plan.legacy),
                logprobs=logprobs,
                finish_reason=reason,
                stop_reason=completion.stop_reason,
            )
        )
    return _envelope(
        ChatCompletionResponse, plan, choices, usage_of(completions, plan.prompt_tokens)
    )


def _chunk(
    plan: ChatPlan, choices: list[ChatStreamChoice], usage: Usage | None = None
) -> ChatCompletionChunk:
    return _envelope(ChatCompletionChunk, plan, choices, usage)


def _envelope(
    kind: type[Envelope], plan: ChatPlan, choices: list[Any], usage: Usage | None
) -> Envelope:
    """The answer or a stream chunk (``kind``) around ``choices``: the plan's id, time, model."""
    return kind(
        id=plan.id,
        created=plan.created,
        model=plan.model,
        system_fingerprint=fingerprint(plan.backend),
        choices=choices,
        usage=usage,
    )


async def _stream(
    plan: ChatPlan, jobs: list[GenerationRequest]
) -> AsyncIterator[ChatCompletionChunk]:
    body = plan.body
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    results = [Completion() for _ in jobs]
    parsers = [plan.output.parser() for _ in jobs]
    called = [False] * len(jobs)
    yield _chunk(
        plan,
        [
            ChatStreamChoice(index=i, delta=ChatDelta(role="assistant", content=""))
            for i in range(len(jobs))
        ],
    )
    async with contextlib.aclosing(merge_streams(plan.runner, jobs)) as merged:
        async for index, chunk in merged:
            results[index].add(chunk)
            done = chunk.finish_reason is not None
            output = parsers[index].feed(chunk.text, final=done)
            called[index] = called[index] or bool(output.tool_calls)
            logprobs = None
            if plan.logprobs is not None and chunk.logprobs:
                logprobs = ChatChoiceLogprobs(content=chat_logprobs(chunk.logprobs))
            if not (output or done or logprobs):
                continue
            reason = finish_reason(chunk.finish_reason, called[index], plan.legacy)
            yield _chunk(
                plan,
                [
                    ChatStreamChoice(
                        index=index,
                        delta=chat_delta(output, plan.legacy),
                        logprobs=logprobs,
                        finish_reason=reason,
                    )
                ],
            )
    if include_usage:
        yield _chunk(plan, [], usage_of(results, plan.prompt_tokens))


@generation_route(
    router, "/v1/chat/completions", ChatCompletionResponse, "Create a chat completion"
)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, response: Response
) -> Any:
    state = get_state(request)
    check_chat_request(body, state)
    return await serve(
        request, response, body, lambda lease: ChatAnswer(ChatPlan(body, lease), lease, state)
    )
