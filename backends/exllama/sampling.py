"""Sampler facts both ExLlama engines derive from :class:`SamplingParams` the same way."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from backends.sampling import SamplingParams

BANNED = float("-inf")


def token_biases(
    params: SamplingParams, eos_ids: Iterable[int], vocab_size: int, constrained: bool = False
) -> dict[int, float]:
    """Additive logit biases for one job: ``logit_bias``, banned and allowed tokens, a banned EOS.

    ``allowed_tokens`` bans every other token except EOS (as the transformers engine does), and
    ``ban_eos_token`` is ignored under a grammar (``constrained``), which ends with EOS.
    """
    biases: dict[int, float] = {}
    for token, bias in params.logit_bias:
        if token < vocab_size:
            biases[token] = biases.get(token, 0.0) + bias
    eos = {t for t in eos_ids if t < vocab_size}
    if params.allowed_tokens:
        keep = set(params.allowed_tokens) | eos
        biases.update({t: BANNED for t in range(vocab_size) if t not in keep})
    banned = {t for t in params.banned_tokens if t < vocab_size}
    if params.ban_eos_token and not constrained:
        banned |= eos
    biases.update({t: BANNED for t in banned})
    return biases


def dry_breaker_ids(pieces: Sequence[str], breakers: Iterable[str]) -> frozenset[int]:
    """Tokens whose text contains one of the DRY sequence breaker strings."""
    wanted = tuple(b for b in breakers if b)
    return frozenset(i for i, piece in enumerate(pieces) if any(b in piece for b in wanted))


def penalty_range(params: SamplingParams) -> int:
    """``penalty_range`` with -1 for "the whole context" (Serval also accepts 0 for that)."""
    return -1 if params.penalty_range <= 0 else params.penalty_range
