"""The ExLlamaV3 sampler stack built from Serval's parameters (exllamav3 itself needs CUDA to
import, so the steps are checked as data: class names of exllamav3's sampler and arguments)."""

from __future__ import annotations

from backends.base import LoadOptions
from backends.exllama.sampling import token_biases
from backends.exllamav3.engine import placement
from backends.exllamav3.sampler import WHOLE_CONTEXT, Step, sampler_steps, unsupported
from backends.sampling import SamplingParams


def names(params: SamplingParams, **kwargs) -> list[str]:
    steps = sampler_steps(params, biases=kwargs.get("biases", {}), dry_breakers=None)
    return [step.name for step in steps]


def test_defaults_sample_from_the_unchanged_distribution() -> None:
    """ExLlamaV3's own default (min_p 0.08, temperature 0.8) is never used."""
    assert names(SamplingParams()) == ["SS_Sample"]


def test_greedy_keeps_biases_and_penalties_then_takes_the_argmax() -> None:
    params = SamplingParams(temperature=0, repetition_penalty=1.1, top_p=0.5)
    steps = sampler_steps(params, biases={5: -float("inf")}, dry_breakers=None)
    assert [s.name for s in steps] == ["SS_LogitBias", "SS_RepP", "SS_Argmax"]
    assert steps[1].args == {"rep_p": 1.1, "sustain_range": WHOLE_CONTEXT, "decay_range": 0}


def test_truncation_order_and_temperature_last() -> None:
    params = SamplingParams(temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, xtc_probability=0.5)
    assert names(params) == [
        "SS_Temperature",
        "SS_TopK",
        "SS_TopP",
        "SS_MinP",
        "SS_XTC",
        "SS_Sample",
    ]
    last = SamplingParams(temperature=0.7, min_p=0.05, temperature_last=True)
    assert names(last) == ["SS_MinP", "SS_Temperature", "SS_Sample"]


def test_penalties_and_dry_carry_their_ranges() -> None:
    params = SamplingParams(
        presence_penalty=0.5,
        frequency_penalty=0.25,
        penalty_range=64,
        repetition_decay=16,
        dry_multiplier=0.8,
        dry_range=100,
    )
    steps = sampler_steps(params, biases={}, dry_breakers=frozenset({3, 4}))
    assert steps[0] == Step(
        "SS_PresFreqP", {"pres_p": 0.5, "freq_p": 0.25, "sustain_range": 64, "decay_range": 16}
    )
    assert steps[1].name == "SS_DRY"
    assert steps[1].args["dry_sequence_breakers"] == frozenset({3, 4})
    assert steps[1].args["dry_range"] == 100


def test_bans_and_allowed_tokens_become_logit_biases() -> None:
    params = SamplingParams(banned_tokens=(3,), allowed_tokens=(5, 6), logit_bias=((5, 1.5),))
    biases = token_biases(params, eos_ids=(2,), vocab_size=10)
    banned = {t for t, b in biases.items() if b == float("-inf")}
    assert banned == {0, 1, 3, 4, 7, 8, 9} and biases[5] == 1.5 and 2 not in biases


def test_samplers_exllamav3_lacks_are_reported() -> None:
    assert unsupported(SamplingParams()) == []
    params = SamplingParams(tfs=0.9, mirostat_mode=2, min_temp=0.5, max_temp=1.5, top_a=0.1)
    assert unsupported(params) == ["top_a", "tfs", "min_temp", "max_temp", "mirostat_mode"]


def test_model_placement_follows_the_split_settings(tmp_path) -> None:
    auto = LoadOptions(path=tmp_path, name="m", autosplit_reserve=(512, 256))
    assert placement(auto, (), True) == {"reserve_per_device": [0.5, 0.25]}
    assert placement(auto, (20.0, 24.0), False) == {"use_per_device": [20.0, 24.0]}
    tp = LoadOptions(path=tmp_path, name="m", tensor_parallel=True)
    assert placement(tp, (), True) == {"tensor_p": True}
