"""Serval's :class:`SamplingParams` as an ``ExLlamaV2Sampler.Settings``, one fresh object per job.

``Settings()`` defaults are not neutral (temperature 0.8, top_k 50, top_p 0.8, repetition
penalty 1.025), and mirostat and DRY keep per-job state on the object, so every field is set
here from the request and no object is ever shared between jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from backends.exllama.sampling import penalty_range, token_biases
from backends.sampling import SamplingParams

# ExLlamaV2's DRY matches n-grams of at most this many tokens, and asserts range > max n-gram.
DRY_MAX_NGRAM = 20


def unsupported(params: SamplingParams) -> list[str]:
    """Settings of ``params`` that ExLlamaV2 cannot apply as asked."""
    found = []
    if params.repetition_penalty_slope > 0:
        found.append("repetition_penalty_slope")
    if params.sampler_order:
        found.append("sampler_order")
    if params.top_n_sigma > 0:
        found.append("top_n_sigma")  # ExLlamaV2 0.3.2 has no top-nσ step
    if params.mirostat_mode == 1:
        found.append("mirostat_mode")  # ExLlamaV2 has mirostat 2 only; mode 1 runs as mode 2
    if params.banned_strings and (
        params.json_schema or params.regex_pattern or params.grammar_string
    ):
        found.append("banned_strings")  # the generator cannot combine them with a grammar
    return found


def to_settings(
    params: SamplingParams,
    *,
    eos_ids: Sequence[int],
    vocab_size: int,
    dry_breakers: Callable[[tuple[str, ...]], frozenset[int]],
    constrained: bool = False,
    guided: bool = False,
) -> Any:
    """A new, fully set ``ExLlamaV2Sampler.Settings`` for one job.

    ``vocab_size`` is the model's (the logits are that wide, padded to 32); ``dry_breakers``
    turns DRY's sequence breaker strings into token ids (the engine caches it); ``guided``: the
    job holds the negative prompt's sequence too, and the sampler mixes both (CFG).
    """
    import torch
    from exllamav2.generator import ExLlamaV2Sampler

    greedy = params.greedy
    dry_range = params.dry_range
    settings = ExLlamaV2Sampler.Settings(
        temperature=1.0 if greedy else params.temperature,
        temperature_last=params.temperature_last,
        smoothing_factor=0.0 if greedy else params.smoothing_factor,
        min_temp=params.min_temp,
        max_temp=params.max_temp if not greedy else params.min_temp,
        temp_exponent=params.temp_exponent,
        top_k=1 if greedy else params.top_k,
        top_p=params.top_p,
        top_a=params.top_a,
        min_p=params.min_p,
        tfs=params.tfs,
        typical=params.typical,
        skew=params.skew,
        mirostat=params.mirostat_mode != 0 and not greedy,
        mirostat_tau=params.mirostat_tau,
        mirostat_eta=params.mirostat_eta,
        mirostat_mu=None,
        token_repetition_penalty=params.repetition_penalty,
        token_repetition_range=penalty_range(params),
        token_repetition_decay=params.repetition_decay,
        token_frequency_penalty=params.frequency_penalty,
        token_presence_penalty=params.presence_penalty,
        cfg_scale=params.cfg_scale if guided else None,
        post_sampling_hooks=[],
        dry_multiplier=params.dry_multiplier,
        dry_base=params.dry_base,
        dry_allowed_length=params.dry_allowed_length,
        dry_range=dry_range,
        dry_max_ngram=min(DRY_MAX_NGRAM, dry_range - 1) if dry_range > 0 else DRY_MAX_NGRAM,
        dry_sequence_breakers=(
            dry_breakers(params.dry_sequence_breakers) if params.dry_multiplier > 0 else None
        ),
        xtc_probability=0.0 if greedy else params.xtc_probability,
        xtc_threshold=params.xtc_threshold,
        xtc_ignore_tokens=None,
    )
    biases = token_biases(params, eos_ids, vocab_size, constrained)
    if biases:
        padded = vocab_size + (-vocab_size % 32)
        bias = torch.zeros((padded,), dtype=torch.float)
        bias[list(biases)] = torch.tensor(list(biases.values()), dtype=torch.float)
        settings.token_bias = bias
    return settings
