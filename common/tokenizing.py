"""Tokenizing request text: off the event loop, and never a text that cannot fit.

Tokenizers take seconds per megabyte (SmolLM2's: about 0.3-0.5 MB/s on one busy core), so text
from a request is tokenized in a worker thread (Hugging Face tokenizers release the GIL while
they encode: the event loop keeps answering). Before that, a text longer than the context
times ``limits.max_chars_per_token`` characters is refused without tokenizing it: at that
bound or fewer characters per token it would have more tokens than the context holds. Kobold,
which keeps the end of a prompt that is too long, is given that end instead.
"""

from __future__ import annotations

import asyncio

from backends.base import ModelView
from common.config import LimitsConfig
from common.errors import ContextLengthError


def most_chars(model: ModelView, limits: LimitsConfig, tokens: int | None = None) -> int:
    """The longest text (in characters) that could still be ``tokens`` (default: the context)."""
    return (tokens or model.info().max_seq_len) * limits.max_chars_per_token


def check_text_fits(
    text: str, model: ModelView, limits: LimitsConfig, param: str = "prompt", what: str = "prompt"
) -> None:
    """Refuse, without tokenizing it, a text too long for the model's context."""
    check_chars_fit(len(text), model, limits, param, what)


def check_chars_fit(
    chars: int, model: ModelView, limits: LimitsConfig, param: str = "prompt", what: str = "prompt"
) -> None:
    """Refuse a text of ``chars`` characters too long for the model's context (a chat's
    messages are counted before its template renders them)."""
    if chars > most_chars(model, limits):
        context = model.info().max_seq_len
        raise ContextLengthError(
            f"The {what} has {chars} characters: more than this model's context of {context} "
            f"tokens can hold at up to {limits.max_chars_per_token} characters per token "
            f"(limits.max_chars_per_token), so it was refused without being tokenized.",
            param=param,
        )


async def encode_text(
    model: ModelView,
    text: str,
    limits: LimitsConfig,
    *,
    add_bos: bool | None,
    encode_special: bool = True,
    param: str = "prompt",
    what: str = "prompt",
) -> list[int]:
    """The token ids of ``text``, tokenized in a worker thread once it is known to fit."""
    check_text_fits(text, model, limits, param, what)
    return await asyncio.to_thread(model.encode, text, add_bos, encode_special)


def keep_end(text: str, tokens: int, limits: LimitsConfig) -> str:
    """The end of ``text`` that still makes ``tokens`` tokens or more: what a left cut keeps."""
    most = tokens * limits.max_chars_per_token
    return text[-most:] if len(text) > most else text
