"""Sampler transforms of the transformers engine: small functions on one row of logits.

Each transform takes the float32 logits of one sequence (shape ``[vocab]``) and a
:class:`SamplerContext`, and returns new logits; removed tokens get ``-inf``. Every transform
returns at once when its sampler is off. A CFG job's logits are first mixed with those of its
negative prompt (:func:`guided_logits`). The transforms run in the order of
:data:`DEFAULT_ORDER`:

1. ``logit_bias``   add the request's biases
2. ``token_bans``   banned / allowed tokens; EOS held back by ``ban_eos_token``, and EOS and the
                    stop tokens by ``min_tokens``; tokens a banned string backtracked from
3. ``penalties``    repetition (multiplicative), then presence and frequency (additive)
4. ``dry``          DRY: penalise tokens that would extend a repeat of earlier text
   ``top_n_sigma``  top-nσ: keep the tokens within n standard deviations of the top logit
5. ``temperature``  quadratic smoothing, then static or dynamic (min_temp..max_temp) temperature
6. ``top_k``, ``top_p``, ``top_a``, ``min_p``, ``tfs``, ``typical``   truncation (ExLlamaV2's order)
7. ``xtc``          exclude top choices

``temperature_last`` moves step 5 after the truncation samplers (before XTC). Kobold's
``sampler_order`` reorders steps 3, 5 and 6 as KoboldCpp does (see :func:`sampler_order`).
With temperature 0 (or ``top_k`` 1) only steps 1-4 run and the most likely token is taken.
Otherwise the token is drawn by :func:`choose_token`: mirostat when asked, then an inverse-CDF
draw from the request's seeded generator, which ``skew`` warps towards less likely tokens.

Semantics follow ExLlamaV2 (what TabbyAPI used), and KoboldCpp or the samplers' authors where
ExLlamaV2 lacks one; the notes on each function say where a choice was made.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from backends.sampling import KOBOLD_SAMPLERS, SamplingParams

NEG_INF = float("-inf")
DRY_MAX_MATCH = 50
"""Longest repeat DRY measures: a bounded lookback, as in the original DRY and KoboldCpp."""
DRY_MAX_PENALTY = 1e30
MIROSTAT_ESTIMATE_TOKENS = 100


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one thread for the samplers.

    On one vocabulary-sized row, waking a second thread costs more than it saves, and on a busy
    machine an op can wait milliseconds for it (measured: 0.1 ms of work averaging 1.2 ms).
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ----- what the transforms see ------------------------------------------------------------------


@dataclass(frozen=True)
class DryBreakers:
    """DRY sequence breakers as token ids: single tokens and multi-token sequences."""

    tokens: frozenset[int] = frozenset()
    sequences: tuple[tuple[int, ...], ...] = ()


class VocabIndex:
    """The text of every token of one model, for samplers that reason about text.

    ``pieces`` returns the decoded text of each token id; it is called once, on first use (in
    the engine's worker thread, since decoding a whole vocabulary takes a moment).
    """

    CACHE_SIZE = 64

    def __init__(
        self, pieces: Callable[[], Sequence[str]], encode: Callable[[str], list[int]]
    ) -> None:
        self._load_pieces = pieces
        self._encode = encode
        self._breakers: OrderedDict[tuple[str, ...], DryBreakers] = OrderedDict()

    @cached_property
    def pieces(self) -> list[str]:
        return list(self._load_pieces())

    @cached_property
    def newline_ids(self) -> frozenset[int]:
        ids = self._encode("\n")
        return frozenset(ids[-1:])

    def dry_breakers(self, strings: Sequence[str]) -> DryBreakers:
        """Every token whose text contains a breaker, and breakers that span several tokens."""
        key = tuple(strings)
        if key in self._breakers:
            self._breakers.move_to_end(key)
            return self._breakers[key]
        tokens: set[int] = set()
        sequences: list[tuple[int, ...]] = []
        for text in dict.fromkeys(s for s in key if s):
            tokens.update(i for i, piece in enumerate(self.pieces) if text in piece)
            ids = self._encode(text)
            if len(ids) == 1:
                tokens.add(ids[0])
            elif len(ids) > 1:
                sequences.append(tuple(ids))
        breakers = DryBreakers(frozenset(tokens), tuple(sequences))
        self._breakers[key] = breakers
        if len(self._breakers) > self.CACHE_SIZE:
            self._breakers.popitem(last=False)
        return breakers


@dataclass
class SamplerContext:
    """What the transforms of one sequence may look at, and their per-sequence state."""

    params: SamplingParams
    token_ids: list[int]
    prompt_len: int
    eos_ids: frozenset[int]
    generator: torch.Generator
    stop_ids: frozenset[int] = frozenset()
    vocab: VocabIndex | None = None
    state: dict[str, Any] = field(default_factory=dict)
    banned_here: frozenset[int] = frozenset()
    _history: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def generated(self) -> int:
        return len(self.token_ids) - self.prompt_len

    def history(self) -> np.ndarray:
        """``token_ids`` as an int64 array, converted once per step."""
        if self._history is None:
            self._history = np.fromiter(self.token_ids, dtype=np.int64, count=len(self.token_ids))
        return self._history

    def begin_step(self) -> None:
        self._history = None

    def cached(self, key: str, build: Callable[[], Any]) -> Any:
        """A value derived from the (fixed) params of this sequence, built once."""
        if key not in self.state:
            self.state[key] = build()
        return self.state[key]


Transform = Callable[[torch.Tensor, SamplerContext], torch.Tensor]


# ----- classifier-free guidance (before every transform) -------------------------------------


def guided_logits(positive: torch.Tensor, negative: torch.Tensor, scale: float) -> torch.Tensor:
    """CFG as ExLlamaV2 0.3.2 does it (``ExLlamaV2Sampler.sample``), before every other step:
    ``neg + scale * (pos - neg)`` of the two sequences' log-softmaxed logits, the prompt's
    (``positive``) and the negative prompt's. ``scale`` 1 gives the prompt's own distribution."""
    pos = torch.log_softmax(positive.float(), dim=-1)
    neg = torch.log_softmax(negative.float(), dim=-1)
    return neg + scale * (pos - neg)


def _ids(values: Collection[int], vocab: int) -> torch.Tensor:
    return torch.tensor(sorted(t for t in values if 0 <= t < vocab), dtype=torch.long)


# ----- steps before temperature -------------------------------------------------------------


def logit_bias(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    if not ctx.params.logit_bias:
        return logits
    vocab = logits.shape[-1]

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [(t, b) for t, b in ctx.params.logit_bias if 0 <= t < vocab]
        return (
            torch.tensor([t for t, _ in pairs], dtype=torch.long),
            torch.tensor([b for _, b in pairs], dtype=logits.dtype),
        )

    index, bias = ctx.cached("logit_bias", build)
    return logits.index_add_(0, index, bias)


def token_bans(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    """Banned and allowed tokens (only the listed ones, as ExLlamaV2; EOS is not added)."""
    params = ctx.params
    vocab = logits.shape[-1]
    if params.allowed_tokens:

        def build_allowed() -> torch.Tensor:
            keep = torch.zeros(vocab, dtype=torch.bool)
            keep[_ids(params.allowed_tokens, vocab)] = True
            return ~keep

        logits.masked_fill_(ctx.cached("not_allowed", build_allowed), NEG_INF)
    if params.banned_tokens:
        logits[ctx.cached("banned", lambda: _ids(params.banned_tokens, vocab))] = NEG_INF
    held: set[int] = set(ctx.banned_here)
    if params.ban_eos_token:
        held |= ctx.eos_ids
    if ctx.generated < params.min_tokens:
        held |= ctx.eos_ids | ctx.stop_ids
    if held:
        logits[_ids(held, vocab)] = NEG_INF
    return logits


def _penalty_weights(count: int, span: int, decay: int, slope: float) -> np.ndarray:
    """Strength of each of the last ``count`` positions, oldest first (1.0 = full penalty).

    The newest ``span`` positions get the full penalty; the ``decay`` positions before them fade
    linearly towards zero (ExLlamaV2's ``token_repetition_decay``). With Kobold's slope in
    (0, 1), the older half of the window keeps ``slope`` of the penalty, as KoboldCpp does.
    """
    age = np.arange(count - 1, -1, -1, dtype=np.float32)
    weights = np.ones(count, dtype=np.float32)
    if decay > 0:
        fading = age >= span
        weights[fading] = 1.0 - (age[fading] - span + 1.0) / (decay + 1.0)
    if 0.0 < slope < 1.0:
        weights[: (count + 1) // 2] *= slope
    return weights


def penalties(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    """Repetition (HF style), presence and frequency penalties over ``penalty_range``.

    A positive range covers the last ``penalty_range`` tokens of the context (prompt included)
    for all three, plus ``repetition_decay`` fading tokens before them (ExLlamaV2). With the
    whole context (-1 or 0) the repetition penalty looks at every token, and presence and
    frequency look at the generated tokens only, as OpenAI describes them and as TabbyAPI
    scaled the range on ExLlamaV2.
    """
    params = ctx.params
    repetition = params.repetition_penalty
    frequency, presence = params.frequency_penalty, params.presence_penalty
    if repetition == 1.0 and frequency == 0.0 and presence == 0.0:
        return logits
    history = ctx.history()
    span = params.penalty_range
    if span > 0:
        decay = params.repetition_decay
        window = history[-(span + decay) :]
        weights = _penalty_weights(len(window), span, decay, params.repetition_penalty_slope)
        _penalise(logits, window, weights, repetition, frequency, presence)
        return logits
    weights = _penalty_weights(len(history), len(history), 0, params.repetition_penalty_slope)
    _penalise(logits, history, weights, repetition, 0.0, 0.0)
    generated = history[ctx.prompt_len :]
    if len(generated) and (frequency or presence):
        ones = np.ones(len(generated), dtype=np.float32)
        _penalise(logits, generated, ones, 1.0, frequency, presence)
    return logits


def _penalise(
    logits: torch.Tensor,
    window: np.ndarray,
    weights: np.ndarray,
    repetition: float,
    frequency: float,
    presence: float,
) -> None:
    if not len(window):
        return
    # Each token once, at its newest (strongest) occurrence: reverse, then first of each id.
    newest_first = window[::-1]
    unique, first = np.unique(newest_first, return_index=True)
    strength = torch.from_numpy(np.ascontiguousarray(weights[::-1][first]))
    index = torch.from_numpy(unique)
    if repetition != 1.0:
        values = logits[index]
        factor = 1.0 + (repetition - 1.0) * strength
        logits[index] = torch.where(values > 0, values / factor, values * factor)
    if presence:
        logits.index_add_(0, index, strength * -presence)
    if frequency:
        every = torch.from_numpy(np.ascontiguousarray(window))
        logits.index_add_(0, every, torch.from_numpy(weights * -frequency))


def _dry_breakers(ctx: SamplerContext) -> DryBreakers:
    def build() -> DryBreakers:
        if ctx.vocab is None:
            return DryBreakers()
        return ctx.vocab.dry_breakers(ctx.params.dry_sequence_breakers)

    return ctx.cached("dry_breakers", build)


def _breaks_at_end(tail: np.ndarray, lookup: np.ndarray, breakers: DryBreakers) -> np.ndarray:
    """Which tokens of ``tail`` are sequence breakers (single tokens or whole sequences)."""
    breaks = lookup[tail]
    for sequence in breakers.sequences:
        size = len(sequence)
        if size > len(tail):
            continue
        starts = np.ones(len(tail) - size + 1, dtype=bool)
        for offset, token in enumerate(sequence):
            starts &= tail[offset : len(tail) - size + 1 + offset] == token
        for start in np.flatnonzero(starts):
            breaks[start : start + size] = True
    return breaks


def dry(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    """DRY ("don't repeat yourself"), as defined by its author and KoboldCpp.

    When the text ends with a sequence that also occurred earlier, the token that followed the
    earlier occurrence is penalised by ``multiplier * base ** (length - allowed_length)``, where
    length is that of the longest such repeat (at least ``allowed_length``). Repeats never
    extend over a sequence breaker, and a breaker is never penalised. Only the last
    ``dry_range`` tokens are searched (0: the whole context). Vectorised: one pass over the
    window finds earlier occurrences of the last token, then the matches are extended backwards
    together, at most :data:`DRY_MAX_MATCH` steps.
    """
    params = ctx.params
    if params.dry_multiplier <= 0.0:
        return logits
    history = ctx.history()
    window = history[-params.dry_range :] if params.dry_range > 0 else history
    n = len(window)
    if n < 2:
        return logits
    vocab = logits.shape[-1]
    breakers = _dry_breakers(ctx)

    def build_lookup() -> np.ndarray:
        lookup = np.zeros(vocab, dtype=bool)
        lookup[[t for t in breakers.tokens if 0 <= t < vocab]] = True
        return lookup

    lookup = ctx.cached("dry_lookup", build_lookup)
    longest_breaker = max((len(s) for s in breakers.sequences), default=1)
    tail = window[-(DRY_MAX_MATCH + longest_breaker) :]
    breaks = _breaks_at_end(tail, lookup, breakers)
    # The repeat ends at the last token and may not contain a breaker.
    broken = np.flatnonzero(breaks)
    limit = len(tail) - 1 - int(broken[-1]) if len(broken) else len(tail)
    limit = min(limit, DRY_MAX_MATCH)
    if limit < params.dry_allowed_length:
        return logits
    starts = np.flatnonzero(window[:-1] == window[-1])
    starts = starts[~lookup[window[starts + 1]]]
    if not len(starts):
        return logits
    lengths = np.ones(len(starts), dtype=np.int64)
    active = np.arange(len(starts))
    for extra in range(1, limit):
        before = starts[active] - extra
        inside = before >= 0
        active = active[inside]
        active = active[window[before[inside]] == window[n - 1 - extra]]
        if not len(active):
            break
        lengths[active] += 1
    repeated = lengths >= params.dry_allowed_length
    if not repeated.any():
        return logits
    followers = window[starts[repeated] + 1]
    longest: dict[int, int] = {}
    for token, length in zip(followers.tolist(), lengths[repeated].tolist(), strict=True):
        if length > longest.get(token, 0):
            longest[token] = length
    tokens = [t for t in longest if t < vocab]
    penalty = [
        min(
            params.dry_multiplier * params.dry_base ** (longest[t] - params.dry_allowed_length),
            DRY_MAX_PENALTY,
        )
        for t in tokens
    ]
    logits.index_add_(
        0, torch.tensor(tokens, dtype=torch.long), -torch.tensor(penalty, dtype=logits.dtype)
    )
    return logits


# ----- temperature ----------------------------------------------------------------------------


def temperature(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    """Quadratic smoothing, then static temperature, or dynamic when ``max_temp > min_temp``.

    Smoothing maps each logit to ``top - factor * (logit - top) ** 2`` (ExLlamaV2, KoboldCpp).
    Dynamic temperature scales between min_temp and max_temp by the normalised entropy of the
    remaining candidates raised to ``temp_exponent``; it replaces the static temperature.
    """
    params = ctx.params
    if params.smoothing_factor > 0:
        top = logits.max()
        if math.isfinite(float(top)):
            logits = top - params.smoothing_factor * (logits - top) ** 2
    temp = params.temperature
    if params.dynamic_temperature:
        temp = _dynamic_temperature(logits, params)
    if temp == 1.0:
        return logits
    return logits / max(temp, 1e-4)


def _dynamic_temperature(logits: torch.Tensor, params: SamplingParams) -> float:
    candidates = int(torch.isfinite(logits).sum())
    if candidates < 2:
        return params.min_temp
    log_probs = torch.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    entropy = -float(torch.where(probs > 0, probs * log_probs, 0.0).sum())
    normalised = min(max(entropy / math.log(candidates), 0.0), 1.0)
    return params.min_temp + (params.max_temp - params.min_temp) * (
        normalised**params.temp_exponent
    )


# ----- truncation -----------------------------------------------------------------------------


def _remove(logits: torch.Tensor, remove: np.ndarray | torch.Tensor) -> torch.Tensor:
    mask = torch.from_numpy(remove) if isinstance(remove, np.ndarray) else remove
    return logits.masked_fill_(mask, NEG_INF)


def _sorted_candidates(logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, and the ids of the candidates (probability > 0), most likely first.

    numpy's argsort: torch.sort of a whole vocabulary is many times slower on the CPU.
    """
    probs = torch.softmax(logits, dim=-1).numpy()
    candidates = np.flatnonzero(probs > 0)
    order = candidates[np.argsort(-probs[candidates], kind="stable")]
    return probs, order, probs[order]


def top_n_sigma(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    """Top-nσ (Tang et al., 2024): keep the tokens whose logit is at least the largest minus
    ``n`` standard deviations of the logits still in play (banned tokens are left out).

    Scaling by a temperature scales the largest logit and the deviation alike, so the kept set
    does not depend on temperature; it runs before it, where llama.cpp and KoboldCpp run it.
    """
    n = ctx.params.top_n_sigma
    if n <= 0.0:
        return logits
    live = logits[torch.isfinite(logits)]
    if live.numel() < 2:
        return logits
    threshold = live.max() - n * live.std(correction=0)
    return _remove(logits, logits < threshold)


def top_k(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    k = ctx.params.top_k
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    threshold = torch.topk(logits, k).values[-1]
    return _remove(logits, logits < threshold)


TOP_P_FIRST_LOOK = 64
"""How many of the most likely tokens top-p sorts first (doubled until they reach ``top_p``)."""


def top_p(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    """The smallest set of most likely tokens whose probabilities reach ``top_p``.

    Only the head of the distribution is sorted: the tokens at least as likely as the k-th most
    likely one (ties included, so their order is that of a full stable sort), k doubling until
    their mass reaches ``top_p``. Sorting a whole vocabulary instead took most of a decode
    step's sampling time.
    """
    p = ctx.params.top_p
    if p >= 1.0:
        return logits
    probs = torch.softmax(logits, dim=-1).numpy()
    vocab = probs.shape[-1]
    look = TOP_P_FIRST_LOOK
    while True:
        kth = np.partition(probs, vocab - look)[vocab - look] if look < vocab else 0.0
        head = np.flatnonzero(probs >= kth) if kth > 0 else np.flatnonzero(probs > 0)
        order = head[np.argsort(-probs[head], kind="stable")]
        if not len(order):  # nothing left to sample from (every logit -inf)
            return logits
        sorted_probs = probs[order]
        reached = np.cumsum(sorted_probs, dtype=np.float64)
        if kth <= 0 or reached[-1] >= p:
            break
        look *= 2
    remove = probs > 0
    remove[order[0]] = False
    remove[order[1:]] = (reached[1:] - sorted_probs[1:]) >= p
    return _remove(logits, remove)


def top_a(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    a = ctx.params.top_a
    if a <= 0.0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    return _remove(logits, probs < a * probs.max() ** 2)


def min_p(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    p = ctx.params.min_p
    if p <= 0.0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    return _remove(logits, probs < p * probs.max())


def tfs(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    """Tail-free sampling, as ExLlamaV2 and KoboldAI: cut where the normalised absolute second
    derivative of the sorted probabilities sums past ``tfs`` (centred on the cut point)."""
    z = ctx.params.tfs
    if z >= 1.0:
        return logits
    probs, order, sorted_probs = _sorted_candidates(logits)
    count = len(order)
    if count < 3:
        return logits
    second = np.abs(np.diff(sorted_probs.astype(np.float64), n=2))
    total = second.sum()
    if total <= 0:
        return logits
    cut = min(int(np.count_nonzero(np.cumsum(second / total) <= z)), count - 2)
    remove = np.zeros(probs.shape, dtype=bool)
    remove[order[cut + 1 :]] = True
    return _remove(logits, remove)


def typical(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    """Locally typical sampling: tokens closest to the expected surprise, until ``typical``."""
    mass = ctx.params.typical
    if mass >= 1.0:
        return logits
    probs, candidates, candidate_probs = _sorted_candidates(logits)
    log_probs = np.log(candidate_probs.astype(np.float64))
    entropy = -(candidate_probs * log_probs).sum()
    order = np.argsort(np.abs(-log_probs - entropy), kind="stable")
    ranked = candidate_probs[order]
    before = np.cumsum(ranked, dtype=np.float64) - ranked
    remove = np.zeros(probs.shape, dtype=bool)
    remove[candidates[order[1:]]] = before[1:] >= mass
    return _remove(logits, remove)


def xtc(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    """Exclude top choices: with ``xtc_probability``, remove every token at or above
    ``xtc_threshold`` except the least likely of them. Skipped when that would remove EOS or a
    newline, as the original XTC does, so the text can still end."""
    params = ctx.params
    if params.xtc_probability <= 0.0:
        return logits
    if float(torch.rand(1, generator=ctx.generator)) >= params.xtc_probability:
        return logits
    probs = torch.softmax(logits, dim=-1)
    threshold = params.xtc_threshold
    vocab = logits.shape[-1]
    # At most 1/threshold tokens can reach the threshold: look at those only.
    most = vocab if threshold <= 0 else min(vocab, int(1.0 / threshold) + 1)
    values, ids = torch.topk(probs, most)
    above = int((values >= threshold).sum())
    if above < 2:
        return logits
    removed = ids[: above - 1]
    protected = ctx.eos_ids | (ctx.vocab.newline_ids if ctx.vocab else frozenset())
    if protected.intersection(removed.tolist()):
        return logits
    logits[removed] = NEG_INF
    return logits


# ----- order ----------------------------------------------------------------------------------

TRANSFORMS: dict[str, Transform] = {
    "logit_bias": logit_bias,
    "token_bans": token_bans,
    "penalties": penalties,
    "dry": dry,
    "top_n_sigma": top_n_sigma,
    "temperature": temperature,
    "top_k": top_k,
    "top_p": top_p,
    "top_a": top_a,
    "min_p": min_p,
    "tfs": tfs,
    "typical": typical,
    "xtc": xtc,
}

DEFAULT_ORDER: tuple[str, ...] = tuple(TRANSFORMS)
GREEDY_ORDER: tuple[str, ...] = ("logit_bias", "token_bans", "penalties", "dry")
KOBOLD_STEPS = {"top_p": ("top_p", "min_p")}  # KoboldCpp applies min_p along with top_p


def takes_the_top_logit(ctx: SamplerContext, banned_here: Collection[int]) -> bool:
    """True when the next token is simply the most likely one of the raw logits: greedy, and
    every step of :data:`GREEDY_ORDER` off (no bias, bans, held EOS, penalties or DRY), with no
    token ``banned_here`` by a backtrack. The scheduler then takes the argmax of all such rows
    at once instead of running the steps row by row."""
    params = ctx.params
    return (
        params.greedy
        and not banned_here
        and not params.logit_bias
        and not params.allowed_tokens
        and not params.banned_tokens
        and not params.ban_eos_token
        and ctx.generated >= params.min_tokens
        and params.repetition_penalty == 1.0
        and params.frequency_penalty == 0.0
        and params.presence_penalty == 0.0
        and params.dry_multiplier <= 0.0
    )


def sampler_order(params: SamplingParams) -> tuple[str, ...]:
    """The order transforms run in for ``params``.

    A Kobold ``sampler_order`` (step names, see :func:`common.sampling.kobold_sampler_order`)
    orders Kobold's seven samplers as KoboldCpp does: bias, bans and DRY first, then the seven
    in the given order (any left out follow in the default order; min_p goes with top_p), then
    XTC.
    """
    if params.greedy:
        return GREEDY_ORDER
    if params.sampler_order:
        named = [name for name in dict.fromkeys(params.sampler_order) if name in KOBOLD_SAMPLERS]
        named += [name for name in DEFAULT_ORDER if name in KOBOLD_SAMPLERS and name not in named]
        steps = [step for name in named for step in KOBOLD_STEPS.get(name, (name,))]
        return ("logit_bias", "token_bans", "dry", "top_n_sigma", *steps, "xtc")
    if params.temperature_last:
        rest = [name for name in DEFAULT_ORDER if name not in ("temperature", "xtc")]
        return (*rest, "temperature", "xtc")
    return DEFAULT_ORDER


def apply_transforms(logits: torch.Tensor, ctx: SamplerContext) -> torch.Tensor:
    ctx.begin_step()
    with single_threaded():
        for name in sampler_order(ctx.params):
            logits = TRANSFORMS[name](logits, ctx)
    return logits


# ----- drawing the token ----------------------------------------------------------------------


def _draw(probs: torch.Tensor, ctx: SamplerContext) -> int:
    """One token from ``probs`` (not necessarily normalised) by inverse CDF.

    ``skew`` (ExLlamaV2) raises the uniform draw to ``exp(-skew)`` over the candidates sorted
    from most to least likely: positive skew favours less likely tokens.
    """
    uniform = float(torch.rand(1, generator=ctx.generator))
    order = None
    if ctx.params.skew != 0.0:
        uniform **= math.exp(-ctx.params.skew)
        order = torch.from_numpy(np.argsort(-probs.numpy(), kind="stable"))
        probs = probs[order]
    cumulative = probs.double().cumsum(0)
    target = torch.tensor([uniform * float(cumulative[-1])], dtype=torch.float64)
    index = min(int(torch.searchsorted(cumulative, target, right=True)), len(probs) - 1)
    return int(order[index]) if order is not None else index


def _mirostat_k(s_hat: float, mu: float, vocab: int, default: int) -> int:
    """Mirostat 1's k from the estimated Zipf exponent (``default`` where it is undefined)."""
    epsilon = s_hat - 1.0
    if s_hat <= 0 or epsilon == 0:
        return default
    try:
        estimate = (epsilon * 2.0**mu / (1.0 - vocab**-epsilon)) ** (1.0 / s_hat)
    except (OverflowError, ZeroDivisionError):
        return default
    if not isinstance(estimate, float) or not math.isfinite(estimate) or estimate <= 0:
        return default
    return int(estimate)


def _mirostat_keep(probs: torch.Tensor, ctx: SamplerContext, mu: float) -> torch.Tensor:
    params = ctx.params
    if params.mirostat_mode == 2:
        # Tokens whose surprise (-log2 p) is at most mu; the most likely one at least.
        kept = probs.masked_fill(probs < 2.0**-mu, 0.0)
    else:
        # Mirostat 1: estimate the Zipf exponent from the top tokens, derive k, keep the top k.
        finite = int((probs > 0).sum())
        top = torch.topk(probs, min(MIROSTAT_ESTIMATE_TOKENS, finite)).values.double()
        ranks = torch.arange(1, len(top), dtype=torch.float64)
        t = torch.log((ranks + 1) / ranks)
        b = torch.log(top[:-1] / top[1:])
        s_hat = float((t * b).sum() / (t * t).sum()) if len(top) > 1 else 0.0
        k = _mirostat_k(s_hat, mu, probs.numel(), default=finite)
        k = max(1, min(k, finite))
        threshold = torch.topk(probs, k).values[-1]
        kept = probs.masked_fill(probs < threshold, 0.0)
    if float(kept.sum()) <= 0.0:
        kept = torch.zeros_like(probs)
        kept[int(torch.argmax(probs))] = 1.0
    return kept / kept.sum()


def _mirostat_choice(logits: torch.Tensor, ctx: SamplerContext) -> int:
    """Mirostat 1 or 2 with its per-sequence ``mu`` (starts at ``2 * tau``)."""
    params = ctx.params
    mu = ctx.state.get("mirostat_mu", 2.0 * params.mirostat_tau)
    kept = _mirostat_keep(torch.softmax(logits, dim=-1), ctx, mu)
    token = _draw(kept, ctx)
    observed = -math.log2(max(float(kept[token]), 1e-30))
    ctx.state["mirostat_mu"] = mu - params.mirostat_eta * (observed - params.mirostat_tau)
    return token


def choose_token(logits: torch.Tensor, ctx: SamplerContext) -> int:
    """Draw the next token from processed logits."""
    params = ctx.params
    with single_threaded():
        if params.greedy or float(logits.max()) == NEG_INF:
            return int(logits.numpy().argmax())  # numpy's argmax: many times torch's speed
        if params.mirostat_mode:
            return _mirostat_choice(logits, ctx)
        return _draw(torch.softmax(logits, dim=-1), ctx)
