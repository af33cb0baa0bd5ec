"""Token routes: encode text or chat messages, decode ids."""

from __future__ import annotations

from fastapi import APIRouter, Request

from common.chat.prompt import ChatPrompt, check_message_count, render_prompt
from common.chat.tools.formats import tool_format
from common.errors import BadRequestError
from common.generation import check_prompt_ids
from common.tokenizing import encode_text
from endpoints.core.types import (
    TokenDecodeRequest,
    TokenDecodeResponse,
    TokenEncodeRequest,
    TokenEncodeResponse,
)
from endpoints.dependencies import REQUIRE_API, get_state

router = APIRouter(tags=["Tokens"], dependencies=REQUIRE_API)


@router.post("/v1/token/encode", summary="Tokenize")
async def encode(body: TokenEncodeRequest, request: Request) -> TokenEncodeResponse:
    """Text, or chat messages rendered through the current template (no generation prompt)."""
    state = get_state(request)
    async with state.container.use() as lease:
        if isinstance(body.text, str):
            text = body.text
        else:
            check_message_count(len(body.text), state.config.limits, param="text")
            if lease.template is None:
                raise BadRequestError(
                    "The loaded model has no chat template.", code="no_chat_template"
                )
            chat = ChatPrompt(
                messages=[m.model_dump(exclude_none=True) for m in body.text],
                add_generation_prompt=False,
                variables=dict(state.config.model.template_vars_default),
                tool_format=tool_format(state.config.model.tool_format, lease.template.source),
            )
            text = await render_prompt(
                lease.template, chat, lease.special_tokens, state.config.limits.template_timeout
            )
        tokens = await encode_text(
            lease,
            text,
            state.config.limits,
            add_bos=body.add_bos_token,
            encode_special=body.encode_special_tokens,
            param="text",
            what="text",
        )
    return TokenEncodeResponse(tokens=tokens, length=len(tokens))


@router.post("/v1/token/decode", summary="Detokenize")
async def decode(body: TokenDecodeRequest, request: Request) -> TokenDecodeResponse:
    state = get_state(request)
    async with state.container.use() as lease:
        if body.tokens:
            check_prompt_ids(body.tokens, lease, param="tokens")
        text = lease.decode(body.tokens, decode_special=body.decode_special_tokens)
    return TokenDecodeResponse(text=text)
