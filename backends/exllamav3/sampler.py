"""Serval's :class:`SamplingParams` as the steps of an ExLlamaV3 ``CustomSampler``.

The steps are described here as plain data (:class:`Step`: a class name of
``exllamav3.generator.sampler.custom`` and its arguments), so the mapping is tested without
importing exllamav3, which cannot be imported without CUDA. The engine instantiates them into a
new sampler for every job. ExLlamaV3's default sampler (min_p 0.08, temperature 0.8) is not
neutral: every job gets an explicit stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backends.sampling import SamplingParams

# SS_RepP / SS_PresFreqP take a "sustain" range; this is ExLlamaV3's own "whole context".
WHOLE_CONTEXT = int(10e7)


@dataclass(frozen=True)
class Step:
    name: str
    args: dict[str, Any] = field(default_factory=dict)


def unsupported(params: SamplingParams) -> list[str]:
    """Settings of ``params`` that ExLlamaV3 has no sampling step for."""
    checks = {
        "top_a": params.top_a > 0,
        "tfs": params.tfs < 1,
        "top_n_sigma": params.top_n_sigma > 0,
        "typical": params.typical < 1,
        "skew": params.skew != 0,
        "smoothing_factor": params.smoothing_factor > 0,
        "min_temp": params.dynamic_temperature,
        "max_temp": params.dynamic_temperature,
        "mirostat_mode": params.mirostat_mode != 0,
        "repetition_penalty_slope": params.repetition_penalty_slope > 0,
        "sampler_order": bool(params.sampler_order),
        # 1.6.5 has no cfg_scale: a job's sampler gets every sequence's logits unmixed
        # (Job.receive_logits: "TODO: (cfg)"), so a negative prompt cannot guide it.
        "cfg_scale": params.cfg,
    }
    return [name for name, missing in checks.items() if missing]


def sampler_steps(
    params: SamplingParams,
    *,
    biases: dict[int, float],
    dry_breakers: frozenset[int] | None,
) -> list[Step]:
    """The steps for one job, in Serval's order: biases and bans, penalties, DRY, then
    temperature and truncation (temperature last when asked), then the draw.

    ``biases`` comes from :func:`backends.exllama.sampling.token_biases` (-inf bans a token);
    ``dry_breakers`` are the token ids of the DRY sequence breakers.
    """
    sustain = params.penalty_range if params.penalty_range > 0 else WHOLE_CONTEXT
    decay = params.repetition_decay
    steps = []
    if biases:
        steps.append(Step("SS_LogitBias", {"logit_bias": dict(biases)}))
    if params.repetition_penalty != 1.0:
        steps.append(
            Step(
                "SS_RepP",
                {
                    "rep_p": params.repetition_penalty,
                    "sustain_range": sustain,
                    "decay_range": decay,
                },
            )
        )
    if params.presence_penalty or params.frequency_penalty:
        steps.append(
            Step(
                "SS_PresFreqP",
                {
                    "pres_p": params.presence_penalty,
                    "freq_p": params.frequency_penalty,
                    "sustain_range": sustain,
                    "decay_range": decay,
                },
            )
        )
    if params.dry_multiplier > 0:
        steps.append(
            Step(
                "SS_DRY",
                {
                    "dry_multiplier": params.dry_multiplier,
                    "dry_base": params.dry_base,
                    "dry_allowed_length": params.dry_allowed_length,
                    "dry_range": params.dry_range,
                    "dry_sequence_breakers": dry_breakers or frozenset(),
                },
            )
        )
    if params.greedy:
        return [*steps, Step("SS_Argmax")]
    temperature = [Step("SS_Temperature", {"temperature": params.temperature})]
    if params.temperature == 1.0:
        temperature = []
    if not params.temperature_last:
        steps += temperature
    if params.top_k > 0:
        steps.append(Step("SS_TopK", {"top_k": params.top_k}))
    if params.top_p < 1.0:
        steps.append(Step("SS_TopP", {"top_p": params.top_p}))
    if params.min_p > 0.0:
        steps.append(Step("SS_MinP", {"min_p": params.min_p}))
    if params.xtc_probability > 0.0:
        steps.append(
            Step(
                "SS_XTC",
                {
                    "probability": params.xtc_probability,
                    "threshold": params.xtc_threshold,
                },
            )
        )
    if params.temperature_last:
        steps += temperature
    return [*steps, Step("SS_Sample")]
