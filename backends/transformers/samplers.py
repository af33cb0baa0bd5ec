"""Sampler transforms of the transformers engine: small functions on one row of logits.

Each transform takes the float32 logits of one sequence (shape ``[vocab]``) and a
:class:`SamplerContext`, and returns new logits; removed tokens get ``-inf``. They run in the
order of :data:`DEFAULT_ORDER` (``temperature_last`` moves temperature after the truncation
samplers; Kobold's ``sampler_order`` reorders the steps it names):

1. ``logit_bias``      add the request's biases
2. ``token_bans``      banned / allowed tokens, EOS held back by min_tokens or ban_eos_token
3. ``penalties``       repetition (multiplicative), frequency and presence (additive), over
                       ``penalty_range`` with ``repetition_decay`` and Kobold's slope
4. ``dry``             DRY: penalise tokens that would extend a repeated sequence
5. ``temperature``     static, dynamic (min_temp..max_temp) and quadratic smoothing
6. ``top_k``, ``top_a``, ``top_p``, ``min_p``, ``tfs``, ``typical``   truncation
7. ``xtc``             exclude top choices
Then the token is drawn by :func:`choose_token`: argmax when greedy, mirostat when asked,
else a categorical draw from the per-request seeded generator (``skew`` warps the draw).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from common.sampling import SamplingParams

NEG_INF = float("-inf")


@dataclass
class SamplerContext:
    """What the transforms of one sequence may look at, and their per-sequence state."""

    params: SamplingParams
    token_ids: list[int]
    prompt_len: int
    eos_ids: frozenset[int]
    generator: torch.Generator
    state: dict[str, Any] = field(default_factory=dict)
    banned_here: frozenset[int] = frozenset()

    @property
    def generated(self) -> int:
        return len(self.token_ids) - self.prompt_len


Transform = Callable[[torch.Tensor, SamplerContext], torch.Tensor]


def logit_bias(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    if not ctx.params.logit_bias:
        return logits
    vocab = logits.shape[-1]
    for token_id, bias in ctx.params.logit_bias:
        if token_id < vocab:
            logits[token_id] += bias
    return logits


def token_bans(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    params = ctx.params
    vocab = logits.shape[-1]
    if params.allowed_tokens:
        keep = torch.zeros(vocab, dtype=torch.bool)
        keep[[t for t in params.allowed_tokens if t < vocab]] = True
        keep[[t for t in ctx.eos_ids if t < vocab]] = True
        logits = logits.masked_fill(~keep, NEG_INF)
    banned = {t for t in params.banned_tokens if t < vocab} | set(ctx.banned_here)
    if params.ban_eos_token or ctx.generated < params.min_tokens:
        banned |= {t for t in ctx.eos_ids if t < vocab}
    if banned:
        logits[list(banned)] = NEG_INF
    return logits


def _penalty_window(ctx: SamplerContext) -> list[int]:
    span = ctx.params.penalty_range
    if span <= 0:
        return ctx.token_ids
    return ctx.token_ids[-span:]


def penalties(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    params = ctx.params
    if (
        params.repetition_penalty == 1.0
        and params.frequency_penalty == 0.0
        and params.presence_penalty == 0.0
    ):
        return logits
    window = _penalty_window(ctx)
    if not window:
        return logits
    vocab = logits.shape[-1]
    ids = torch.tensor([t for t in window if t < vocab], dtype=torch.long)
    if ids.numel() == 0:
        return logits
    # Weight of each occurrence: 1 for recent tokens; older ones fade with decay and slope.
    weights = _occurrence_weights(len(ids), params)
    counts = torch.zeros(vocab, dtype=torch.float32).index_add_(0, ids, weights)
    strength = torch.zeros(vocab, dtype=torch.float32).scatter_reduce_(
        0, ids, weights, reduce="amax", include_self=True
    )
    present = strength > 0
    if params.repetition_penalty != 1.0:
        factor = params.repetition_penalty ** strength[present]
        values = logits[present]
        logits[present] = torch.where(values > 0, values / factor, values * factor)
    if params.frequency_penalty:
        logits -= params.frequency_penalty * counts
    if params.presence_penalty:
        logits -= params.presence_penalty * strength
    return logits


def _occurrence_weights(count: int, params: SamplingParams) -> torch.Tensor:
    """1.0 for each occurrence, fading for the oldest ``repetition_decay`` ones and by slope."""
    weights = torch.ones(count, dtype=torch.float32)
    if params.repetition_decay > 0 and count > 1:
        age = torch.arange(count - 1, -1, -1, dtype=torch.float32)  # 0 = newest
        fade_start = max(count - params.repetition_decay, 0)
        fade = ((count - 1 - age) / max(params.repetition_decay, 1)).clamp(max=1.0)
        weights = torch.where(age >= fade_start, fade.clamp(min=0.0), weights)
    if params.repetition_penalty_slope > 0 and count > 1:
        position = torch.linspace(-1.0, 1.0, count)
        weights = weights * torch.sigmoid(position * params.repetition_penalty_slope * 4)
    return weights


def temperature(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    params = ctx.params
    if params.greedy:
        return logits
    temp = params.temperature
    if params.dynamic_temperature:
        probs = torch.softmax(logits, dim=-1)
        entropy = -(probs * torch.log(probs.clamp_min(1e-20))).sum()
        finite = int(torch.isfinite(logits).sum())
        max_entropy = math.log(max(finite, 2))
        ratio = float((entropy / max_entropy).clamp(0.0, 1.0)) ** params.temp_exponent
        temp = params.min_temp + (params.max_temp - params.min_temp) * ratio
    if params.smoothing_factor > 0:
        top = logits.max()
        logits = top - params.smoothing_factor * (logits - top) ** 2
    if temp != 1.0:
        logits = logits / max(temp, 1e-5)
    return logits


def top_k(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    k = ctx.params.top_k
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    threshold = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < threshold, NEG_INF)


def top_p(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    p = ctx.params.top_p
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    # Remove a token when the tokens before it already reach p (the top token always stays).
    remove_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= p
    remove = torch.zeros_like(remove_sorted).scatter_(0, order, remove_sorted)
    return logits.masked_fill(remove, NEG_INF)


def min_p(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    p = ctx.params.min_p
    if p <= 0.0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < p * probs.max(), NEG_INF)


def top_a(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    a = ctx.params.top_a
    if a <= 0.0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < a * probs.max() ** 2, NEG_INF)


def tfs(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    z = ctx.params.tfs
    if z >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    if probs.numel() < 3:
        return logits
    second = probs.diff().diff().abs()
    weights = second / second.sum().clamp_min(1e-20)
    cumulative = weights.cumsum(dim=-1)
    # Keep the first two tokens' positions relative to the second derivative, as Kobold does.
    remove_sorted = torch.cat(
        [torch.zeros(1, dtype=torch.bool), cumulative > z, torch.ones(1, dtype=torch.bool)]
    )
    remove_sorted[0] = False
    remove = torch.zeros_like(remove_sorted).scatter_(0, order, remove_sorted)
    return logits.masked_fill(remove, NEG_INF)


def typical(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    mass = ctx.params.typical
    if mass >= 1.0:
        return logits
    log_probs = torch.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    finite = torch.isfinite(log_probs)
    entropy = -(probs[finite] * log_probs[finite]).sum()
    surprise_gap = (-log_probs - entropy).abs().masked_fill(~finite, float("inf"))
    _, order = torch.sort(surprise_gap)
    cumulative = probs[order].cumsum(dim=-1)
    remove_sorted = (cumulative - probs[order]) >= mass
    remove_sorted[0] = False
    remove = torch.zeros_like(remove_sorted).scatter_(0, order, remove_sorted)
    return logits.masked_fill(remove, NEG_INF)


def xtc(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    params = ctx.params
    if params.xtc_probability <= 0.0:
        return logits
    if torch.rand(1, generator=ctx.generator).item() >= params.xtc_probability:
        return logits
    probs = torch.softmax(logits, dim=-1)
    above = probs >= params.xtc_threshold
    if int(above.sum()) < 2:
        return logits
    # Remove every token above the threshold except the least likely of them.
    keep_prob = probs[above].min()
    remove = above & (probs > keep_prob)
    return logits.masked_fill(remove, NEG_INF)


def dry(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    params = ctx.params
    if params.dry_multiplier <= 0.0:
        return logits
    breakers: set[int] = ctx.state.get("dry_breaker_ids", set())
    tokens = ctx.token_ids if params.dry_range <= 0 else ctx.token_ids[-params.dry_range :]
    n = len(tokens)
    if n < 2:
        return logits
    # Length of the repeat that each earlier occurrence of the last token would continue.
    last = tokens[-1]
    if last in breakers:
        return logits
    best: dict[int, int] = {}
    for i in range(n - 2, -1, -1):
        if tokens[i] != last:
            continue
        length = 1
        while (
            length <= i
            and length < n - 1
            and tokens[i - length] == tokens[n - 1 - length]
            and tokens[i - length] not in breakers
        ):
            length += 1
        follower = tokens[i + 1]
        if follower in breakers:
            continue
        if length > best.get(follower, 0):
            best[follower] = length
    vocab = logits.shape[-1]
    for token, length in best.items():
        if length >= params.dry_allowed_length and token < vocab:
            exponent = length - params.dry_allowed_length
            logits[token] -= params.dry_multiplier * params.dry_base**exponent
    return logits


TRANSFORMS: dict[str, Transform] = {
    "logit_bias": logit_bias,
    "token_bans": token_bans,
    "penalties": penalties,
    "dry": dry,
    "temperature": temperature,
    "top_k": top_k,
    "top_a": top_a,
    "top_p": top_p,
    "min_p": min_p,
    "tfs": tfs,
    "typical": typical,
    "xtc": xtc,
}

DEFAULT_ORDER: tuple[str, ...] = (
    "logit_bias",
    "token_bans",
    "penalties",
    "dry",
    "temperature",
    "top_k",
    "top_a",
    "top_p",
    "min_p",
    "tfs",
    "typical",
    "xtc",
)

# Kobold's sampler ids: 0 top_k, 1 top_a, 2 top_p, 3 tfs, 4 typical, 5 temperature, 6 rep_pen.
KOBOLD_SAMPLER_NAMES = ("top_k", "top_a", "top_p", "tfs", "typical", "temperature", "penalties")


def sampler_order(params: SamplingParams) -> tuple[str, ...]:
    """The order transforms run in for ``params``."""
    if params.sampler_order:
        named = [name for name in params.sampler_order if name in TRANSFORMS]
        placed = iter(named)
        reorderable = set(named)
        return tuple(next(placed) if name in reorderable else name for name in DEFAULT_ORDER)
    if params.temperature_last:
        rest = tuple(name for name in DEFAULT_ORDER if name != "temperature")
        return (*rest[: rest.index("xtc")], "temperature", "xtc")
    return DEFAULT_ORDER


def apply_transforms(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    for name in sampler_order(ctx.params):
        logits = TRANSFORMS[name](logits, ctx)
    return logits


def _mirostat_choice(logits: torch.Tensor, ctx: SamplerContext) -> int:
    params = ctx.params
    mu = ctx.state.setdefault("mirostat_mu", 2.0 * params.mirostat_tau)
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    surprise = -torch.log2(sorted_probs.clamp_min(1e-20))
    if params.mirostat_mode == 1:
        m = min(100, sorted_probs.numel() - 1)
        ratios = sorted_probs[:m] / sorted_probs[1 : m + 1].clamp_min(1e-20)
        ranks = torch.arange(1, m + 1, dtype=torch.float32)
        t = torch.log((ranks + 1) / ranks)
        s_hat = float((t * torch.log(ratios.clamp_min(1e-20))).sum() / (t * t).sum())
        epsilon = s_hat - 1
        n = logits.numel()
        k = int(((epsilon * 2**mu) / (1 - n ** (-epsilon))) ** (1 / s_hat)) if s_hat > 0 else n
        keep = max(1, min(k, n))
        kept = sorted_probs.clone()
        kept[keep:] = 0
    else:
        kept = sorted_probs.masked_fill(surprise > mu, 0.0)
        if float(kept.sum()) == 0.0:
            kept[0] = sorted_probs[0]
    index = int(torch.multinomial(kept / kept.sum(), 1, generator=ctx.generator))
    observed = float(surprise[index])
    ctx.state["mirostat_mu"] = mu - params.mirostat_eta * (observed - params.mirostat_tau)
    return int(order[index])


def choose_token(logits: torch.Tensor, ctx: SamplerContext) -> int:
    """Draw the next token from processed logits."""
    params = ctx.params
    if params.greedy or not torch.isfinite(logits).any():
        return int(torch.argmax(logits))
    if params.mirostat_mode:
        return _mirostat_choice(logits, ctx)
    probs = torch.softmax(logits, dim=-1)
    if params.skew != 0.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = sorted_probs.cumsum(dim=-1)
        draw = torch.rand(1, generator=ctx.generator).item() ** math.exp(-params.skew)
        index = int(torch.searchsorted(cumulative, torch.tensor([draw * float(cumulative[-1])])))
        return int(order[min(index, order.numel() - 1)])
    return int(torch.multinomial(probs, 1, generator=ctx.generator))
