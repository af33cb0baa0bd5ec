"""The CPU engine's sampler transforms on hand-made logits: what each keeps, removes and draws."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace

import pytest
import torch

from backends.sampling import SamplingParams
from backends.transformers import samplers
from backends.transformers.samplers import (
    DEFAULT_ORDER,
    DRY_MAX_MATCH,
    DryBreakers,
    SamplerContext,
    VocabIndex,
    apply_transforms,
    choose_token,
    guided_logits,
    sampler_order,
    takes_the_top_logit,
)
from common.sampling import kobold_sampler_order

NEG_INF = float("-inf")
EOS = 0


def context(
    tokens: list[int] | None = None,
    prompt_len: int | None = None,
    seed: int = 0,
    vocab: VocabIndex | None = None,
    stop_ids: frozenset[int] = frozenset(),
    **params: object,
) -> SamplerContext:
    tokens = list(tokens or [])
    return SamplerContext(
        params=SamplingParams(**params),  # type: ignore[arg-type]
        token_ids=tokens,
        prompt_len=len(tokens) if prompt_len is None else prompt_len,
        eos_ids=frozenset({EOS}),
        generator=torch.Generator().manual_seed(seed),
        stop_ids=stop_ids,
        vocab=vocab,
    )


def step(name: str, logits: list[float], ctx: SamplerContext) -> torch.Tensor:
    ctx.begin_step()
    return samplers.TRANSFORMS[name](torch.tensor(logits, dtype=torch.float32), ctx)


def kept(logits: torch.Tensor) -> set[int]:
    return {i for i, value in enumerate(logits.tolist()) if value != NEG_INF}


def logits_of(probs: list[float]) -> list[float]:
    return [math.log(p) if p > 0 else NEG_INF for p in probs]


# ----- bias and bans ----------------------------------------------------------------------------


def test_logit_bias_adds_to_the_named_tokens_only() -> None:
    ctx = context(logit_bias=((1, 5.0), (3, -2.5)))
    assert step("logit_bias", [0.0, 1.0, 2.0, 3.0], ctx).tolist() == [0.0, 6.0, 2.0, 0.5]


def test_logit_bias_of_100_makes_a_token_the_greedy_choice() -> None:
    ctx = context(logit_bias=((2, 100.0),), temperature=0.0)
    logits = apply_transforms(torch.tensor([9.0, 8.0, -3.0, 7.0]), ctx)
    assert choose_token(logits, ctx) == 2


def test_banned_tokens_are_removed() -> None:
    ctx = context(banned_tokens=(1, 3))
    assert kept(step("token_bans", [1.0] * 5, ctx)) == {0, 2, 4}


def test_allowed_tokens_keep_only_those_listed() -> None:
    ctx = context(allowed_tokens=(2, 4))
    assert kept(step("token_bans", [1.0] * 6, ctx)) == {2, 4}


def test_ban_eos_token_removes_eos() -> None:
    ctx = context(ban_eos_token=True)
    assert kept(step("token_bans", [5.0, 1.0, 1.0], ctx)) == {1, 2}


def test_min_tokens_holds_back_eos_and_stop_tokens_until_reached() -> None:
    ctx = context([7, 7], prompt_len=2, min_tokens=2, stop_ids=frozenset({3}))
    assert kept(step("token_bans", [1.0] * 5, ctx)) == {1, 2, 4}
    ctx.token_ids.append(1)
    assert kept(step("token_bans", [1.0] * 5, ctx)) == {1, 2, 4}
    ctx.token_ids.append(1)
    assert kept(step("token_bans", [1.0] * 5, ctx)) == {0, 1, 2, 3, 4}


def test_tokens_banned_at_a_position_by_backtracking_are_removed() -> None:
    ctx = context()
    ctx.banned_here = frozenset({2})
    assert kept(step("token_bans", [1.0] * 4, ctx)) == {0, 1, 3}


# ----- penalties --------------------------------------------------------------------------------


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_once() -> None:
    ctx = context([1, 1, 1, 2], repetition_penalty=2.0)
    out = step("penalties", [4.0, 4.0, -4.0, 4.0], ctx)
    assert out.tolist() == [4.0, 2.0, -8.0, 4.0]


def test_frequency_counts_occurrences_and_presence_counts_once() -> None:
    ctx = context([5, 1, 1, 1, 2], prompt_len=1, frequency_penalty=0.5, presence_penalty=0.25)
    out = step("penalties", [0.0, 0.0, 0.0, 0.0, 0.0, 0.0], ctx)
    assert out.tolist() == [0.0, -1.75, -0.75, 0.0, 0.0, 0.0]


def test_whole_context_frequency_and_presence_skip_the_prompt() -> None:
    """Range -1: repetition looks at the prompt too; frequency and presence only at the output."""
    ctx = context([1, 2], prompt_len=1, repetition_penalty=2.0, presence_penalty=1.0)
    out = step("penalties", [2.0, 2.0, 2.0], ctx)
    assert out.tolist() == [2.0, 1.0, 0.0]


def test_penalty_range_limits_the_window_for_every_penalty() -> None:
    ctx = context(
        [1, 2, 3],
        prompt_len=0,
        penalty_range=2,
        repetition_penalty=2.0,
        frequency_penalty=1.0,
    )
    out = step("penalties", [2.0, 2.0, 2.0, 2.0], ctx)
    assert out.tolist() == [2.0, 2.0, 0.0, 0.0]


def test_repetition_decay_fades_the_penalty_of_older_tokens() -> None:
    ctx = context([1, 2, 3, 4], penalty_range=1, repetition_decay=3, repetition_penalty=3.0)
    out = step("penalties", [0.0, 6.0, 6.0, 6.0, 6.0], ctx)
    # Token 4 is in range (full penalty); 3, 2, 1 fade by 3/4, 2/4, 1/4 of it.
    assert out.tolist() == pytest.approx([0.0, 6 / 1.5, 6 / 2.0, 6 / 2.5, 6 / 3.0])


def test_kobold_slope_weakens_the_older_half_of_the_range() -> None:
    ctx = context([1, 2, 3, 4], repetition_penalty=3.0, repetition_penalty_slope=0.5)
    out = step("penalties", [0.0, 6.0, 6.0, 6.0, 6.0], ctx)
    assert out.tolist() == pytest.approx([0.0, 3.0, 3.0, 2.0, 2.0])
    flat = context([1, 2, 3, 4], repetition_penalty=3.0, repetition_penalty_slope=1.0)
    assert step("penalties", [0.0, 6.0, 6.0, 6.0, 6.0], flat).tolist() == [0.0, 2, 2, 2, 2]


def test_penalties_off_leave_the_logits_untouched() -> None:
    ctx = context([1, 2, 3])
    assert step("penalties", [1.0, 2.0, 3.0, 4.0], ctx).tolist() == [1.0, 2.0, 3.0, 4.0]


# ----- DRY --------------------------------------------------------------------------------------


def dry_context(
    tokens: list[int], breakers: frozenset[int] | set[int] = frozenset(), **params: object
) -> SamplerContext:
    settings: dict[str, object] = {"dry_multiplier": 1.0, "dry_base": 2.0, "dry_allowed_length": 2}
    ctx = context(tokens, **{**settings, **params})  # type: ignore[arg-type]
    ctx.state["dry_breakers"] = DryBreakers(frozenset(breakers))
    return ctx


def test_dry_penalises_the_token_that_would_extend_a_repeat() -> None:
    # "5 6 7 8 ... 5 6 7": the text ends with "5 6 7", which was followed by 8 before.
    ctx = dry_context([5, 6, 7, 8, 1, 5, 6, 7])
    out = step("dry", [0.0] * 10, ctx)
    assert out[8] == -(1.0 * 2.0 ** (3 - 2))
    assert [i for i, v in enumerate(out.tolist()) if v] == [8]


def test_dry_ignores_repeats_shorter_than_the_allowed_length() -> None:
    ctx = dry_context([5, 8, 1, 5])  # only "5" repeats
    assert not step("dry", [0.0] * 10, ctx).any()


def test_dry_takes_the_longest_repeat_for_each_token() -> None:
    ctx = dry_context([2, 3, 9, 1, 2, 3, 4, 9, 1, 2, 3])
    out = step("dry", [0.0] * 10, ctx)
    assert out[4] == -(2.0 ** (4 - 2))  # "9 1 2 3" -> 4
    assert out[9] == -(2.0 ** (2 - 2))  # "2 3" -> 9


def test_dry_repeats_stop_at_sequence_breakers() -> None:
    # Token 1 is a breaker: the repeat "1 5 6" is only "5 6" long, as allowed_length 3 needs 3.
    tokens = [1, 5, 6, 8, 1, 5, 6]
    assert step("dry", [0.0] * 10, dry_context(tokens, dry_allowed_length=3))[8] < 0
    broken = dry_context(tokens, breakers={1}, dry_allowed_length=3)
    assert not step("dry", [0.0] * 10, broken).any()


def test_dry_never_penalises_a_breaker() -> None:
    ctx = dry_context([5, 6, 3, 5, 6], breakers={3})
    assert not step("dry", [0.0] * 10, ctx).any()


def test_dry_breaker_sequences_break_where_they_occur_whole() -> None:
    ctx = dry_context([4, 5, 6, 7, 8, 4, 5, 6, 7], dry_allowed_length=3)
    assert step("dry", [0.0] * 10, ctx)[8] == -(2.0 ** (4 - 3))
    ctx = dry_context([4, 5, 6, 7, 8, 4, 5, 6, 7], dry_allowed_length=3)
    ctx.state["dry_breakers"] = DryBreakers(sequences=((5, 6),))
    assert not step("dry", [0.0] * 10, ctx).any()


def test_dry_range_limits_how_far_back_repeats_are_found() -> None:
    tokens = [5, 6, 8, 1, 1, 1, 5, 6]
    assert step("dry", [0.0] * 10, dry_context(tokens))[8] < 0
    assert not step("dry", [0.0] * 10, dry_context(tokens, dry_range=6)).any()


def test_dry_penalty_grows_to_the_bounded_lookback_on_long_repeats() -> None:
    pattern = list(range(1, 31))
    ctx = dry_context(pattern * 400 + pattern[:-1], dry_base=1.1)  # 12 000 tokens
    out = step("dry", [0.0] * 40, ctx)
    assert out[30] == pytest.approx(-(1.1 ** (DRY_MAX_MATCH - 2)), rel=1e-6)
    assert [i for i, v in enumerate(out.tolist()) if v] == [30]


def reference_dry(tokens: list[int], breakers: set[int], allowed: int) -> dict[int, int]:
    """DRY as its author wrote it (a plain loop), for comparison: token -> longest repeat."""
    last = tokens[-1]
    if last in breakers:
        return {}
    longest: dict[int, int] = {}
    for i in range(len(tokens) - 1):
        if tokens[i] != last or tokens[i + 1] in breakers:
            continue
        length = 1
        while length < DRY_MAX_MATCH:
            j = i - length
            if j < 0 or tokens[j] != tokens[-(length + 1)] or tokens[j] in breakers:
                break
            length += 1
        longest[tokens[i + 1]] = max(length, longest.get(tokens[i + 1], 0))
    return {t: n for t, n in longest.items() if n >= allowed}


@pytest.mark.parametrize("seed", range(40))
def test_dry_matches_the_reference_loop_on_random_text(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = rng.randint(2, 6)
    tokens = [rng.randrange(alphabet) for _ in range(rng.randint(2, 300))]
    breakers = {alphabet - 1} if seed % 2 else set()
    ctx = dry_context(tokens, breakers=breakers, dry_base=1.5)
    out = step("dry", [0.0] * alphabet, ctx)
    expected = reference_dry(tokens, breakers, 2)
    got = {t: v for t, v in enumerate(out.tolist()) if v}
    assert got.keys() == expected.keys()
    for token, length in expected.items():
        assert got[token] == pytest.approx(-(1.5 ** (length - 2)), rel=1e-5)


def test_dry_breakers_come_from_the_vocabulary_text() -> None:
    pieces = ["<eos>", "a", "b", "\n", ".\n", "Al", "ice", ":"]
    encoded = {"\n": [3], "Alice": [5, 6], ":": [7]}
    vocab = VocabIndex(lambda: pieces, lambda text: encoded[text])
    breakers = vocab.dry_breakers(["\n", "Alice"])
    assert breakers.tokens == {3, 4}
    assert breakers.sequences == ((5, 6),)
    assert vocab.dry_breakers(["\n", "Alice"]) is breakers  # cached per breaker list
    assert vocab.newline_ids == {3}


def test_dry_state_is_per_request() -> None:
    pieces = ["<eos>", "a", "b", "c", ":"]
    vocab = VocabIndex(lambda: pieces, lambda text: [pieces.index(text)])
    tokens = [1, 4, 2, 3, 1, 4, 2]
    with_colon = context(tokens, vocab=vocab, dry_multiplier=1.0, dry_sequence_breakers=(":",))
    without = context(tokens, vocab=vocab, dry_multiplier=1.0, dry_sequence_breakers=("b",))
    assert not step("dry", [0.0] * 5, with_colon).any()  # ":" breaks "1 : 2"
    assert step("dry", [0.0] * 5, without).tolist() == [0.0, 0.0, 0.0, 0.0, 0.0]  # "b" ends it
    plain = context(tokens, vocab=vocab, dry_multiplier=1.0, dry_sequence_breakers=())
    assert step("dry", [0.0] * 5, plain)[3] == -(1.75 ** (3 - 2))
    assert with_colon.state["dry_breakers"].tokens == {4}
    assert plain.state["dry_breakers"].tokens == frozenset()


# ----- temperature ------------------------------------------------------------------------------


def test_temperature_divides_the_logits() -> None:
    assert step("temperature", [2.0, 1.0, -1.0], context(temperature=2.0)).tolist() == [
        1.0,
        0.5,
        -0.5,
    ]


def test_dynamic_temperature_follows_the_entropy() -> None:
    uniform = step("temperature", [1.0] * 8, context(min_temp=0.5, max_temp=2.0))
    assert uniform.tolist() == pytest.approx([0.5] * 8)  # entropy at its maximum: max_temp
    peaked = context(min_temp=0.5, max_temp=2.0)
    out = step("temperature", [30.0, 0.0, 0.0, 0.0], peaked)
    assert out[0] == pytest.approx(30.0 / 0.5, rel=1e-3)  # almost no entropy: min_temp


def test_dynamic_temperature_exponent_bends_the_mapping() -> None:
    logits = logits_of([0.7, 0.1, 0.1, 0.1])
    linear = step("temperature", logits, context(min_temp=0.0, max_temp=1.0))
    squared = step("temperature", logits, context(min_temp=0.0, max_temp=1.0, temp_exponent=2.0))
    ratio_linear = logits[0] / float(linear[0])
    ratio_squared = logits[0] / float(squared[0])
    assert ratio_squared == pytest.approx(ratio_linear**2, rel=1e-4)


def test_smoothing_factor_keeps_the_top_and_lowers_the_rest_quadratically() -> None:
    out = step("temperature", [3.0, 2.0, 0.0], context(smoothing_factor=0.5))
    assert out.tolist() == [3.0, 2.5, -1.5]


# ----- truncation -------------------------------------------------------------------------------


def test_top_k_keeps_the_k_most_likely() -> None:
    assert kept(step("top_k", [0.1, 3.0, 2.0, 0.5, 2.5], context(top_k=2))) == {1, 4}


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = logits_of([0.5, 0.3, 0.15, 0.05])
    assert kept(step("top_p", logits, context(top_p=0.75))) == {0, 1}
    assert kept(step("top_p", logits, context(top_p=0.8))) == {0, 1}
    assert kept(step("top_p", logits, context(top_p=0.81))) == {0, 1, 2}
    assert kept(step("top_p", logits, context(top_p=0.0))) == {0}


@pytest.mark.parametrize("seed", range(6))
def test_top_p_on_a_whole_vocabulary_keeps_the_most_likely_until_p(seed: int) -> None:
    """Ties (rounded logits) are kept lowest id first; removed tokens never come back; the
    nucleus is larger than the head the sampler looks at first, so its widening is used."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.round(torch.randn(49152, generator=generator) * (0.5 + seed))
    logits[torch.rand(49152, generator=generator) < 0.2] = NEG_INF
    p = [0.0, 0.3, 0.9, 0.99, 0.5, 0.999][seed]
    probs = torch.softmax(logits, dim=-1).double().tolist()
    ranked = sorted((i for i, q in enumerate(probs) if q > 0), key=lambda i: (-probs[i], i))
    expected, mass = set(), 0.0
    for token in ranked:
        if expected and mass >= p:
            break
        expected.add(token)
        mass += probs[token]
    ctx = context(top_p=p)
    ctx.begin_step()
    assert kept(samplers.top_p(logits.clone(), ctx)) == expected


def test_top_n_sigma_keeps_the_logits_within_n_deviations_of_the_top() -> None:
    logits = [4.0, 3.0, 1.0, 0.0, -2.0]  # mean 1.2, population deviation ~2.04
    assert kept(step("top_n_sigma", logits, context(top_n_sigma=1.0))) == {0, 1}  # >= 1.96
    assert kept(step("top_n_sigma", logits, context(top_n_sigma=1.5))) == {0, 1, 2}  # >= 0.94
    assert kept(step("top_n_sigma", logits, context(top_n_sigma=0.0))) == {0, 1, 2, 3, 4}


def test_top_n_sigma_ignores_banned_tokens_and_temperature() -> None:
    with_ban = [4.0, 3.0, NEG_INF, 1.0, 0.0, -2.0]
    assert kept(step("top_n_sigma", with_ban, context(top_n_sigma=1.0))) == {0, 1}
    hot = context(top_n_sigma=1.0, temperature=3.0)
    cold = context(top_n_sigma=1.0, temperature=0.3)
    logits = torch.tensor([4.0, 3.0, 1.0, 0.0, -2.0])
    assert kept(apply_transforms(logits.clone(), hot)) == kept(apply_transforms(logits, cold))


def test_top_a_cuts_relative_to_the_square_of_the_top_probability() -> None:
    logits = logits_of([0.6, 0.2, 0.15, 0.05])
    # threshold 0.5 * 0.36 = 0.18
    assert kept(step("top_a", logits, context(top_a=0.5))) == {0, 1}


def test_min_p_cuts_relative_to_the_top_probability() -> None:
    logits = logits_of([0.5, 0.3, 0.15, 0.05])
    assert kept(step("min_p", logits, context(min_p=0.3))) == {0, 1, 2}
    assert kept(step("min_p", logits, context(min_p=0.61))) == {0}


def test_tfs_cuts_the_tail_after_the_bend() -> None:
    probs = [0.4, 0.3, 0.2, 0.05, 0.03, 0.02]
    # |second differences| 0, .05, .13, .01 (sum .19): cumulative 0, .26, .95, 1.
    assert kept(step("tfs", logits_of(probs), context(tfs=0.5))) == {0, 1, 2}
    assert kept(step("tfs", logits_of(probs), context(tfs=0.96))) == {0, 1, 2, 3}
    # As ExLlamaV2 and KoboldAI, the cut is centred on the bend: the tail past it always goes.
    assert kept(step("tfs", logits_of(probs), context(tfs=0.999))) == {0, 1, 2, 3}
    flat_tail = [0.5, 0.1, 0.1, 0.1, 0.1, 0.1]
    assert kept(step("tfs", logits_of(flat_tail), context(tfs=0.9))) == {0}  # bend at the top


def test_typical_keeps_the_tokens_closest_to_the_expected_surprise() -> None:
    probs = [0.5, 0.25, 0.125, 0.125]
    # entropy 1.75 bits: surprises 1, 2, 3, 3 bits are 0.75, 0.25, 1.25, 1.25 away from it.
    assert kept(step("typical", logits_of(probs), context(typical=0.2))) == {1}
    assert kept(step("typical", logits_of(probs), context(typical=0.7))) == {0, 1}
    kept_most = kept(step("typical", logits_of(probs), context(typical=0.8)))
    assert len(kept_most) == 3 and {0, 1} < kept_most


def test_xtc_removes_every_top_choice_but_the_least_likely() -> None:
    logits = logits_of([0.05, 0.4, 0.3, 0.2, 0.05])
    ctx = context(xtc_probability=1.0, xtc_threshold=0.2)
    assert kept(step("xtc", logits, ctx)) == {0, 3, 4}


def test_xtc_does_nothing_with_fewer_than_two_top_choices() -> None:
    logits = logits_of([0.1, 0.7, 0.1, 0.1])
    ctx = context(xtc_probability=1.0, xtc_threshold=0.2)
    assert kept(step("xtc", logits, ctx)) == {0, 1, 2, 3}


def test_xtc_never_removes_eos() -> None:
    logits = logits_of([0.4, 0.3, 0.3])  # EOS (0) is a top choice
    ctx = context(xtc_probability=1.0, xtc_threshold=0.2)
    assert kept(step("xtc", logits, ctx)) == {0, 1, 2}


def test_xtc_acts_with_its_probability() -> None:
    logits = logits_of([0.05, 0.5, 0.45])
    ctx = context(xtc_probability=0.3, xtc_threshold=0.2, seed=3)
    acted = sum(len(kept(step("xtc", logits, ctx))) == 2 for _ in range(1000))
    assert 230 < acted < 370


# ----- order ------------------------------------------------------------------------------------


def test_default_order() -> None:
    assert DEFAULT_ORDER == (
        "logit_bias",
        "token_bans",
        "penalties",
        "dry",
        "top_n_sigma",
        "temperature",
        "top_k",
        "top_p",
        "top_a",
        "min_p",
        "tfs",
        "typical",
        "xtc",
    )
    assert sampler_order(SamplingParams()) == DEFAULT_ORDER


def test_temperature_last_moves_temperature_after_truncation() -> None:
    order = sampler_order(SamplingParams(temperature_last=True))
    assert order[-2:] == ("temperature", "xtc")
    assert order.index("temperature") > order.index("typical")


def test_temperature_last_changes_what_min_p_keeps() -> None:
    logits = torch.tensor(logits_of([0.6, 0.3, 0.1]))
    first = context(temperature=4.0, min_p=0.3)
    last = context(temperature=4.0, min_p=0.3, temperature_last=True)
    assert kept(apply_transforms(logits.clone(), first)) == {0, 1, 2}  # flattened, then cut
    assert kept(apply_transforms(logits.clone(), last)) == {0, 1}  # cut, then flattened


def test_greedy_runs_only_the_steps_before_temperature() -> None:
    assert sampler_order(SamplingParams(temperature=0.0, xtc_probability=1.0)) == (
        "logit_bias",
        "token_bans",
        "penalties",
        "dry",
    )
    ctx = context(temperature=0.0, xtc_probability=1.0, xtc_threshold=0.1)
    logits = apply_transforms(torch.tensor(logits_of([0.1, 0.5, 0.4])), ctx)
    assert choose_token(logits, ctx) == 1


@pytest.mark.parametrize(
    "params",
    [
        {"logit_bias": ((2, 5.0),)},
        {"banned_tokens": (1,)},
        {"allowed_tokens": (2,)},
        {"ban_eos_token": True},
        {"min_tokens": 1},
        {"repetition_penalty": 2.0},
        {"frequency_penalty": 1.0},
        {"presence_penalty": 1.0},
        {"dry_multiplier": 1.0},
    ],
)
def test_greedy_takes_the_top_logit_only_when_every_greedy_step_is_off(params: dict) -> None:
    """The scheduler's shortcut (one argmax for the batch) is taken exactly where the greedy
    steps would leave the most likely token as it is."""
    assert takes_the_top_logit(context([1, 1, 1, 1], prompt_len=4, temperature=0.0), ())
    assert takes_the_top_logit(context([1], prompt_len=1, top_k=1), ())
    assert not takes_the_top_logit(context([1], prompt_len=1, temperature=0.5), ())
    assert not takes_the_top_logit(context([1], prompt_len=1, temperature=0.0), (1,))
    ctx = context([1, 1, 1, 1], prompt_len=4, temperature=0.0, **params)
    assert not takes_the_top_logit(ctx, ())


def test_kobold_sampler_order_orders_koboldcpp_samplers() -> None:
    names = kobold_sampler_order([5, 6, 0, 1, 3, 4, 2])  # temperature first, then rep pen, ...
    assert names == ("temperature", "penalties", "top_k", "top_a", "tfs", "typical", "top_p")
    assert sampler_order(SamplingParams(sampler_order=names)) == (
        "logit_bias",
        "token_bans",
        "dry",
        "top_n_sigma",
        "temperature",
        "penalties",
        "top_k",
        "top_a",
        "tfs",
        "typical",
        "top_p",
        "min_p",
        "xtc",
    )
    # Samplers left out follow in the default order: here temperature comes last.
    partial = sampler_order(SamplingParams(sampler_order=kobold_sampler_order([6, 0, 1, 3, 4, 2])))
    assert partial[-3:] == ("min_p", "temperature", "xtc")


def test_kobold_sampler_order_changes_the_result() -> None:
    """Frequency penalty before temperature is divided by it; after, it is not."""
    base = {"temperature": 2.0, "frequency_penalty": 1.0}
    default = context([1], prompt_len=0, **base)
    kobold = context([1], prompt_len=0, sampler_order=("temperature", "penalties"), **base)
    assert apply_transforms(torch.tensor([2.0, 2.0]), default).tolist() == [1.0, 0.5]
    assert apply_transforms(torch.tensor([2.0, 2.0]), kobold).tolist() == [1.0, 0.0]


# ----- drawing ----------------------------------------------------------------------------------


def draws(ctx: SamplerContext, logits: list[float], count: int) -> Counter[int]:
    tensor = torch.tensor(logits)
    return Counter(choose_token(apply_transforms(tensor.clone(), ctx), ctx) for _ in range(count))


def test_the_same_seed_draws_the_same_tokens() -> None:
    logits = [0.0] * 50
    ctx_a, ctx_b, ctx_c = context(seed=7), context(seed=7), context(seed=8)
    a = [choose_token(torch.tensor(logits), ctx_a) for _ in range(20)]
    b = [choose_token(torch.tensor(logits), ctx_b) for _ in range(20)]
    c = [choose_token(torch.tensor(logits), ctx_c) for _ in range(20)]
    assert a == b
    assert a != c


def test_draws_follow_the_distribution_and_never_pick_removed_tokens() -> None:
    counts = draws(context(seed=1), logits_of([0.7, 0.2, 0.1, 0.0]), 2000)
    assert counts[3] == 0
    assert abs(counts[0] / 2000 - 0.7) < 0.04
    assert abs(counts[2] / 2000 - 0.1) < 0.03


def test_skew_favours_less_likely_tokens() -> None:
    logits = logits_of([0.6, 0.3, 0.1])
    plain = draws(context(seed=2), logits, 2000)
    skewed = draws(context(seed=2, skew=2.0), logits, 2000)
    assert skewed[0] < plain[0] - 400
    assert skewed[2] > plain[2] + 200


def test_mirostat_2_keeps_tokens_within_the_surprise_budget() -> None:
    ctx = context(mirostat_mode=2, mirostat_tau=1.0, mirostat_eta=0.0)  # mu stays 2 bits
    counts = draws(ctx, logits_of([0.5, 0.3, 0.15, 0.05]), 500)
    assert set(counts) == {0, 1}  # surprise 1 and 1.7 bits; 2.7 and 4.3 are over mu


def test_mirostat_learns_mu_per_request() -> None:
    logits = logits_of([0.5, 0.5])
    ctx = context(mirostat_mode=2, mirostat_tau=3.0, mirostat_eta=0.5)
    choose_token(torch.tensor(logits), ctx)
    # mu starts at 2 tau = 6; both tokens kept (1 bit each): mu -= 0.5 * (1 - 3)
    assert ctx.state["mirostat_mu"] == pytest.approx(7.0)
    other = context(mirostat_mode=2, mirostat_tau=3.0, mirostat_eta=0.5)
    assert "mirostat_mu" not in other.state
    choose_token(torch.tensor(logits), ctx)
    assert ctx.state["mirostat_mu"] == pytest.approx(8.0)


def test_mirostat_mu_follows_the_target_surprise() -> None:
    """A low target drives mu down to the likeliest tokens; a high one lets more through."""
    logits = logits_of([0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05])
    low = context(mirostat_mode=2, mirostat_tau=0.5, mirostat_eta=0.3, seed=4)
    high = context(mirostat_mode=2, mirostat_tau=3.0, mirostat_eta=0.3, seed=4)
    draws(low, logits, 200)
    draws(high, logits, 200)
    assert low.state["mirostat_mu"] < high.state["mirostat_mu"]
    assert len(draws(low, logits, 200)) < len(draws(high, logits, 200))


def test_mirostat_1_estimates_k_from_the_distribution() -> None:
    zipf = [1.0 / r for r in range(1, 201)]
    total = sum(zipf)
    logits = logits_of([p / total for p in zipf])
    tight = context(mirostat_mode=1, mirostat_tau=0.1, mirostat_eta=0.0)
    assert set(draws(tight, logits, 200)) == {0}  # mu 0.2 bits: k = 1
    loose = context(mirostat_mode=1, mirostat_tau=10.0, mirostat_eta=0.0)
    assert len(draws(loose, logits, 300)) > 20


def test_samplers_off_change_nothing() -> None:
    logits = torch.randn(64, generator=torch.Generator().manual_seed(0))
    ctx = context([3, 4, 5, 3, 4])
    assert torch.equal(apply_transforms(logits.clone(), ctx), logits)


def test_a_heavy_stack_keeps_a_valid_distribution() -> None:
    params = {
        "dry_multiplier": 0.8,
        "xtc_probability": 0.5,
        "mirostat_mode": 2,
        "repetition_penalty": 1.1,
        "frequency_penalty": 0.2,
        "presence_penalty": 0.2,
        "top_k": 40,
        "top_p": 0.9,
        "min_p": 0.05,
        "tfs": 0.95,
        "typical": 0.9,
        "top_a": 0.1,
        "smoothing_factor": 0.3,
        "min_temp": 0.5,
        "max_temp": 1.5,
    }
    ctx = context([1, 2, 3, 1, 2, 3, 1, 2], prompt_len=3, **params)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(5)
    for _ in range(30):
        logits = apply_transforms(torch.randn(100, generator=generator), ctx)
        token = choose_token(logits, ctx)
        assert logits[token] != NEG_INF
        ctx.token_ids.append(token)


def test_params_are_frozen_per_request() -> None:
    params = SamplingParams(temperature=0.5)
    with pytest.raises(AttributeError):
        params.temperature = 1.0  # type: ignore[misc]
    assert replace(params, temperature=1.0).temperature == 1.0


def test_cfg_mixes_the_log_probabilities_of_both_prompts() -> None:
    """neg + s * (pos - neg) of the log-softmaxed rows (ExLlamaV2's formula): scale 1 is the
    prompt's distribution, a larger one pushes away from what the negative prompt favours."""
    positive = torch.tensor([2.0, 1.0, 0.0, -1.0])
    negative = torch.tensor([3.0, -1.0, 0.0, 0.0])
    pos, neg = torch.log_softmax(positive, -1), torch.log_softmax(negative, -1)
    assert torch.allclose(guided_logits(positive, negative, 1.0), pos)
    mixed = guided_logits(positive, negative, 3.0)
    assert torch.allclose(mixed, neg + 3.0 * (pos - neg))
    assert int(positive.argmax()) == 0 and int(mixed.argmax()) == 1  # token 0 is the negative's
    assert torch.allclose(guided_logits(positive + 7.0, negative - 2.0, 3.0), mixed)  # shift-free
