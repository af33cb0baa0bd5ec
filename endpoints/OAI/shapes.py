"""Small builders for OpenAI response pieces: ids, usage, and both logprob shapes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence

from backends.base import TokenLogprob
from common.generation import Completion
from endpoints.OAI.types.chat import ChatLogprob, ChatLogprobAlternative
from endpoints.OAI.types.common import PromptTokensDetails, Usage
from endpoints.OAI.types.completion import CompletionLogprobs

LOGPROB_FLOOR = -9999.0


def new_id(prefix: str, sep: str = "-") -> str:
    return f"{prefix}{sep}{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def fingerprint(backend: str) -> str:
    return f"serval-{backend}"


def _finite(value: float) -> float:
    return value if value > LOGPROB_FLOOR else LOGPROB_FLOOR


def usage_of(completions: Sequence[Completion], prompt_tokens: int) -> Usage:
    stats = [c.stats for c in completions if c.stats is not None]
    completion_tokens = sum(s.completion_tokens for s in stats)
    prompt_time = max((s.prefill_time for s in stats), default=0.0)
    completion_time = max((s.generate_time for s in stats), default=0.0)
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(
            cached_tokens=max((s.cached_tokens for s in stats), default=0)
        ),
        prompt_time=round(prompt_time, 4),
        completion_time=round(completion_time, 4),
        completion_tokens_per_sec=(
            round(completion_tokens / completion_time, 2) if completion_time > 0 else None
        ),
    )


def legacy_logprobs(
    records: Sequence[TokenLogprob | None],
    pieces: Callable[[int], str],
    prompt_ids: Sequence[int] = (),
    offset: int = 0,
) -> CompletionLogprobs:
    """The completions shape: parallel lists of tokens, logprobs, alternatives and offsets.

    ``prompt_ids`` with ``records`` that start with the prompt's entries (echo); an entry that is
    None (the first prompt token) has no logprob.
    """
    result = CompletionLogprobs()
    position = offset
    for index, record in enumerate(records):
        if record is None:
            token = pieces(prompt_ids[index]) if index < len(prompt_ids) else ""
            result.tokens.append(token)
            result.token_logprobs.append(None)
            result.top_logprobs.append(None)
        else:
            token = record.token
            result.tokens.append(token)
            result.token_logprobs.append(_finite(record.logprob))
            result.top_logprobs.append(
                {piece: _finite(logprob) for _, piece, logprob in record.top}
                if record.top
                else None
            )
        result.text_offset.append(position)
        position += len(token)
    return result


def _alternative(piece: str, logprob: float) -> ChatLogprobAlternative:
    return ChatLogprobAlternative(
        token=piece, logprob=_finite(logprob), bytes=list(piece.encode("utf-8"))
    )


def chat_logprobs(records: Sequence[TokenLogprob]) -> list[ChatLogprob]:
    return [
        ChatLogprob(
            token=record.token,
            logprob=_finite(record.logprob),
            bytes=list(record.token.encode("utf-8")),
            top_logprobs=[_alternative(piece, logprob) for _, piece, logprob in record.top],
        )
        for record in records
    ]
