"""The sampling parameters an engine receives: one job's concrete, frozen sampler settings.

Part of the engine contract (with ``backends/base.py``): request models, presets and their
resolution into these settings live in ``common/sampling.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_DRY_SEQUENCE_BREAKERS = ("\n", ":", '"', "*")


@dataclass(frozen=True)
class SamplingParams:
    """Concrete sampler settings of one job, every field set (neutral where not asked for)."""

    max_tokens: int | None = None
    min_tokens: int = 0
    stop: tuple[str | int, ...] = ()
    banned_strings: tuple[str, ...] = ()
    banned_tokens: tuple[int, ...] = ()
    allowed_tokens: tuple[int, ...] = ()
    token_healing: bool = False
    temperature: float = 1.0
    temperature_last: bool = False
    smoothing_factor: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    top_a: float = 0.0
    min_p: float = 0.0
    tfs: float = 1.0
    top_n_sigma: float = 0.0
    typical: float = 1.0
    skew: float = 0.0
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    mirostat_mode: int = 0
    mirostat_tau: float = 1.5
    mirostat_eta: float = 0.3
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_range: int = -1
    repetition_decay: int = 0
    repetition_penalty_slope: float = 0.0
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_range: int = 0
    dry_sequence_breakers: tuple[str, ...] = DEFAULT_DRY_SEQUENCE_BREAKERS
    min_temp: float = 1.0
    max_temp: float = 1.0
    temp_exponent: float = 1.0
    add_bos_token: bool | None = None
    ban_eos_token: bool = False
    logit_bias: tuple[tuple[int, float], ...] = ()
    seed: int | None = None
    sampler_order: tuple[str, ...] | None = None
    json_schema: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    regex_pattern: str | None = None
    grammar_string: str | None = None
    cfg_scale: float = 1.0
    """Classifier-free guidance: 1 is off; else each step samples from
    ``neg + cfg_scale * (pos - neg)`` of the two sequences' log-softmaxed logits."""
    negative_prompt: str | None = None
    """The negative prompt's text as sent (None: the BOS token alone)."""
    negative_prompt_ids: tuple[int, ...] = ()
    """The negative prompt's ids, set by request planning whenever :attr:`cfg` is on."""
    not_applied: tuple[str, ...] = ()
    """Settings the request asked for that no engine applies (named to the client)."""

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def cfg(self) -> bool:
        """Whether the job guides its logits with a second, negative-prompt sequence."""
        return self.cfg_scale != 1.0

    @property
    def dynamic_temperature(self) -> bool:
        return self.max_temp > self.min_temp


KOBOLD_SAMPLERS = ("top_k", "top_a", "top_p", "tfs", "typical", "temperature", "penalties")
"""Kobold's sampler ids (the index) as the names of the engine's sampling steps."""
