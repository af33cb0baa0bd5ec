"""Cache and context sizes for the ExLlama engines, and the room a job has in the cache."""

from __future__ import annotations

from common.errors import BadRequestError, ContextLengthError

PAGE_SIZE = 256
CACHE_MODES = ("FP16", "Q8", "Q6", "Q4")


def round_up_to_page(tokens: int) -> int:
    return max(PAGE_SIZE, -(-tokens // PAGE_SIZE) * PAGE_SIZE)


def round_down_to_page(tokens: int) -> int:
    return max(PAGE_SIZE, tokens // PAGE_SIZE * PAGE_SIZE)


def cache_tokens(requested: int | None, max_seq_len: int, minimum: int = 0) -> int:
    """The K/V cache size: ``requested`` (default ``max_seq_len``), a multiple of 256.

    Both generators refuse other sizes, so the size is rounded up rather than refused.
    """
    wanted = requested or max_seq_len
    return round_up_to_page(max(wanted, minimum))


def auto_rope_alpha(target_len: int, native_len: int) -> float:
    """NTK alpha to stretch a ``native_len`` context to ``target_len`` (TabbyAPI's fit)."""
    ratio = target_len / native_len
    if ratio <= 1.0:
        return 1.0
    return -0.13436 + 0.80541 * ratio + 0.28833 * ratio**2


def rope_alpha(value: float | str | None, target_len: int, native_len: int) -> float:
    if value == "auto":
        return auto_rope_alpha(target_len, native_len)
    return float(value) if value else 1.0


def cache_mode(value: str) -> str:
    mode = (value or "FP16").upper()
    if mode not in CACHE_MODES:
        raise BadRequestError(
            f"Unknown cache_mode {value!r}; choose one of {', '.join(CACHE_MODES)}.",
            param="cache_mode",
        )
    return mode


def job_room(prompt_len: int, wanted: int, capacity: int, reserve: int) -> int:
    """How many new tokens a job may ask for: ``wanted``, clamped to what the cache holds.

    ``capacity`` is the most tokens one job may occupy; ``reserve`` is what the generator needs
    beyond prompt and output (draft tokens, a healed token). A prompt that leaves no room is an
    error here, before the job reaches the generator, which would otherwise assert (ExLlamaV2's
    async generator then spins forever on the rejected job).
    """
    room = capacity - prompt_len - reserve
    if room < 1:
        reserved = f", {reserve} of them kept for the generator" if reserve else ""
        raise ContextLengthError(
            f"The prompt has {prompt_len} tokens, but a job may hold at most {capacity} tokens "
            f"in this model's cache{reserved}.",
            param="prompt",
        )
    return min(wanted, room)
