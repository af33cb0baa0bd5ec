"""The ExLlamaV2 engine without a GPU: exllamav2's real Python code over a STUB of its CUDA
extension (tests/support/exllamav2_stub.py). Config reading, the tokenizer, the sampler
mapping, job arguments, clamping and the llguidance filter run as they do on a GPU; the
generator's forward pass is replaced by a stand-in only where a whole request is streamed.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from backends.base import DraftOptions, GenerationRequest, LoadOptions
from backends.exllama.driver import GeneratorDriver
from backends.sampling import SamplingParams
from common.errors import ContextLengthError
from common.generation import collect
from common.grammar import from_json_schema
from tests.support.scripted_generator import ScriptedGenerator
from tests.support.tiny_model import build_tiny_exllama_model


@pytest.fixture(scope="module")
def exllamav2() -> Any:
    from tests.support.exllamav2_stub import import_exllamav2

    try:
        return import_exllamav2()
    except ModuleNotFoundError as exc:
        pytest.fail(f"{exc}: run ./test.sh, whose set-up installs exllamav2 for the CPU tests")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_exllama_model(tmp_path_factory.mktemp("exl2") / "tiny")


def engine_for(model_dir: Path, **options: Any) -> Any:
    from backends.exllamav2.engine import ExLlamaV2Engine

    engine = ExLlamaV2Engine(LoadOptions(path=model_dir, name="tiny", **options))
    engine.read_model_files()
    return engine


@pytest.fixture(scope="module")
def engine(exllamav2: Any, model_dir: Path) -> Any:
    return engine_for(model_dir, max_seq_len=700)


def request(engine: Any, text: str = "Hello world", **kwargs: Any) -> GenerationRequest:
    params = kwargs.pop("params", SamplingParams())
    defaults: dict[str, Any] = {
        "max_new_tokens": 20,
        "stop_token_ids": frozenset(engine.special_tokens.eos_ids),
    }
    return GenerationRequest("req", engine.encode(text), params, **{**defaults, **kwargs})


def test_config_sizes_and_attention_without_flash_attn(engine: Any) -> None:
    limits = engine.limits
    assert (limits.max_seq_len, limits.cache_tokens) == (700, 768)  # cache: a multiple of 256
    assert engine.paged is False and limits.max_batch_size == 1  # no flash-attn on this machine
    assert engine.config.no_sdpa is True  # ExLlamaV2's SDPA path is not causal without it
    assert engine.config.max_input_len == limits.chunk_size == 2048
    info = engine.info()
    assert (info.backend, info.max_seq_len, info.cache_size, info.cache_mode) == (
        "exllamav2",
        700,
        768,
        "FP16",
    )


def test_auto_rope_alpha_stretches_the_native_context(exllamav2: Any, model_dir: Path) -> None:
    stretched = engine_for(model_dir, max_seq_len=1024, rope_alpha="auto", cache_size=1000)
    assert stretched.config.max_seq_len == 1024
    assert stretched.rope_alpha == pytest.approx(2.62978, abs=1e-4)
    assert stretched.config.scale_alpha_value == stretched.rope_alpha
    assert stretched.limits.cache_tokens == 1024


def test_tokenizer_matches_the_tokenizers_library(engine: Any, model_dir: Path) -> None:
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    text = "<|im_start|>user\nThe quick brown fox<|im_end|>"
    assert engine.encode(text) == reference.encode(text, add_special_tokens=False).ids
    assert engine.encode(text, encode_special=False)[0] != 3  # the marker as plain text
    assert engine.encode("fox", add_bos=True)[0] == 1
    assert engine.decode(engine.encode(text)) == text
    assert engine.decode(engine.encode(text), decode_special=False) == "user\nThe quick brown fox"
    special = engine.special_tokens
    assert (special.bos_id, special.eos_ids, special.add_bos_default) == (1, (2,), False)
    assert engine.token_piece(2) == "</s>"
    assert engine.vocab_size == reference.get_vocab_size()


def test_default_settings_are_neutral(exllamav2: Any, engine: Any) -> None:
    """ExLlamaV2's own defaults (temperature 0.8, top_k 50, top_p 0.8, rep. penalty 1.025)
    would change every request that did not ask for them."""
    from backends.exllamav2.sampler import to_settings

    settings = to_settings(
        SamplingParams(),
        eos_ids=(2,),
        vocab_size=engine.vocab_size,
        dry_breakers=engine.dry_breakers,
    )
    assert settings.temperature == 1.0 and settings.top_k == 0 and settings.top_p == 1.0
    assert settings.token_repetition_penalty == 1.0 and settings.token_bias is None
    assert settings.min_p == 0 and settings.tfs == 1.0 and settings.typical == 1.0
    assert settings.dry_multiplier == 0 and settings.xtc_probability == 0
    assert settings.mirostat is False and settings.max_temp <= settings.min_temp


def test_settings_follow_the_request(engine: Any) -> None:
    from backends.exllamav2.sampler import to_settings

    params = SamplingParams(
        temperature=0.7,
        temperature_last=True,
        top_k=40,
        top_p=0.9,
        min_p=0.05,
        repetition_penalty=1.1,
        penalty_range=0,
        frequency_penalty=0.2,
        mirostat_mode=2,
        mirostat_tau=4.0,
        dry_multiplier=0.8,
        dry_range=10,
        xtc_probability=0.5,
    )
    s = to_settings(
        params, eos_ids=(2,), vocab_size=engine.vocab_size, dry_breakers=engine.dry_breakers
    )
    assert (s.temperature, s.temperature_last, s.top_k, s.top_p, s.min_p) == (
        0.7,
        True,
        40,
        0.9,
        0.05,
    )
    assert (s.token_repetition_penalty, s.token_repetition_range) == (1.1, -1)  # 0: whole context
    assert s.token_frequency_penalty == 0.2
    assert s.mirostat is True and s.mirostat_tau == 4.0 and s.mirostat_mu is None
    assert s.dry_range == 10 and s.dry_max_ngram == 9  # ExLlamaV2 asserts range > max n-gram
    newline = engine.encode("\n")[0]
    assert newline in s.dry_sequence_breakers and 1 not in s.dry_sequence_breakers
    assert s.xtc_probability == 0.5

    greedy = to_settings(
        SamplingParams(temperature=0, mirostat_mode=2, repetition_penalty=1.2),
        eos_ids=(2,),
        vocab_size=engine.vocab_size,
        dry_breakers=engine.dry_breakers,
    )
    assert (greedy.top_k, greedy.temperature, greedy.mirostat) == (1, 1.0, False)
    assert greedy.token_repetition_penalty == 1.2  # penalties still shape the argmax


def test_token_bias_carries_logit_bias_bans_and_allowed_tokens(engine: Any) -> None:
    from backends.exllamav2.sampler import to_settings

    def bias(params: SamplingParams, constrained: bool = False) -> torch.Tensor:
        settings = to_settings(
            params,
            eos_ids=(2,),
            vocab_size=engine.vocab_size,
            dry_breakers=engine.dry_breakers,
            constrained=constrained,
        )
        return settings.token_bias

    width = engine.vocab_size + (-engine.vocab_size % 32)
    tensor = bias(SamplingParams(logit_bias=((5, 2.5),), banned_tokens=(7,), ban_eos_token=True))
    assert tensor.shape == (width,)
    assert tensor[5] == 2.5 and tensor[7] == float("-inf") and tensor[2] == float("-inf")
    assert tensor[8] == 0
    allowed = bias(SamplingParams(allowed_tokens=(10, 11)))
    assert torch.isfinite(allowed[: engine.vocab_size]).nonzero().reshape(-1).tolist() == [
        2,
        10,
        11,
    ]
    assert (
        bias(SamplingParams(ban_eos_token=True), constrained=True) is None
    )  # a grammar ends on EOS


def test_job_arguments(engine: Any, model_dir: Path) -> None:
    drafting = engine_for(model_dir, max_seq_len=700, draft=DraftOptions(path=None, mode="ngram"))
    params = SamplingParams(min_tokens=3, seed=7, banned_strings=("Forbidden",))
    req = request(drafting, params=params, stop_strings=("END",), logprobs=2)
    job = drafting.build_job(req, 20)
    assert 2 in job.stop_tokens and job.stop_strings == {"END"}  # EOS must be a stop condition
    assert job.max_new_tokens == 24  # drafting jobs end num_draft_tokens early
    assert job.min_new_tokens == 3 and job.return_logits and job.decode_special_tokens
    assert job.banned_strings == ["forbidden"]
    assert job.rng.random() == random.Random(7).random()
    other = drafting.build_job(req, 20)
    assert other.gen_settings is not job.gen_settings  # mirostat and DRY keep state on it


def test_clamping_happens_before_the_generator_sees_a_job(engine: Any) -> None:
    def sized(prompt_len: int, max_new_tokens: int) -> GenerationRequest:
        req = request(engine, max_new_tokens=max_new_tokens)
        req.prompt_ids = [10] * prompt_len
        return req

    assert engine.room_for(sized(100, 50)) == 50
    assert engine.room_for(sized(600, 600)) == 100  # a job may hold 700 tokens here
    with pytest.raises(ContextLengthError):
        engine.room_for(sized(700, 10))


def paged_engine(model_dir: Path) -> Any:
    """An engine as it is with flash-attn >= 2.5.7 (paged attention), which this machine lacks:
    only its jobs are built here, no generator runs."""
    paged = engine_for(model_dir, max_seq_len=700)
    paged.paged = True
    return paged


def test_a_cfg_job_holds_both_sequences_in_paged_mode(exllamav2: Any, model_dir: Path) -> None:
    paged = paged_engine(model_dir)
    negative = tuple(paged.encode("A sad story"))
    params = SamplingParams(cfg_scale=1.5, negative_prompt_ids=negative)
    req = request(paged, params=params)
    job = paged.build_job(req, 20)
    sequences = [sequence.input_ids.torch().tolist() for sequence in job.sequences]
    assert sequences == [[req.prompt_ids], [list(negative)]]
    assert job.gen_settings.cfg_scale == 1.5
    assert paged.unsupported_params(params) == []
    plain = paged.build_job(request(paged), 20)
    assert len(plain.sequences) == 1 and plain.gen_settings.cfg_scale is None


def test_cfg_without_paged_attention_is_named_and_the_job_has_one_sequence(engine: Any) -> None:
    params = SamplingParams(cfg_scale=1.5, negative_prompt_ids=(1,))
    assert engine.unsupported_params(params) == ["cfg_scale"]
    job = engine.build_job(request(engine, params=params), 20)
    assert len(job.sequences) == 1 and job.gen_settings.cfg_scale is None


def test_a_cfg_job_is_clamped_to_room_for_both_sequences(exllamav2: Any, model_dir: Path) -> None:
    paged = paged_engine(model_dir)  # a cache of 768 tokens: three pages of 256

    def sized(prompt_len: int, negative_len: int) -> GenerationRequest:
        params = SamplingParams(cfg_scale=2.0, negative_prompt_ids=(10,) * negative_len)
        req = request(paged, params=params, max_new_tokens=300)
        req.prompt_ids = [10] * prompt_len
        return req

    assert paged.room_for(sized(100, 1)) == 78  # (768 - 101 - 2 * 255) // 2
    with pytest.raises(ContextLengthError, match="negative prompt"):
        paged.room_for(sized(100, 300))


def test_the_grammar_filter_allows_only_what_the_schema_allows(engine: Any) -> None:
    grammar = from_json_schema({"type": "object", "properties": {"a": {"type": "integer"}}})
    req = request(engine, params=SamplingParams(banned_strings=("x",)), grammar=grammar)
    job = engine.build_job(req, 20)
    assert job.banned_strings == []  # ExLlamaV2 cannot combine them with a filter
    (grammar_filter,) = job.filters
    width = engine.vocab_size + (-engine.vocab_size % 32)
    letter = engine.encode("x")[0]
    for step, token in enumerate(engine.encode('{"a":12}')):
        grammar_filter.prepare_logit_mask()
        logits = grammar_filter.mask_logits(torch.zeros(width))
        assert logits[token] == 0
        if step == 0:
            assert torch.isfinite(logits).sum() < 10 and logits[letter] == float("-inf")
        grammar_filter.feed(torch.tensor([[token]]))
    grammar_filter.prepare_logit_mask()
    logits = grammar_filter.mask_logits(torch.zeros(width))
    assert torch.isfinite(logits).nonzero().reshape(-1).tolist() == [2]  # only EOS: done


def test_unsupported_params_are_reported(engine: Any) -> None:
    assert engine.unsupported_params(SamplingParams()) == []
    found = engine.unsupported_params(
        SamplingParams(repetition_penalty_slope=1.0, mirostat_mode=1, sampler_order=("top_k",))
    )
    assert found == ["repetition_penalty_slope", "sampler_order", "mirostat_mode"]


def test_a_request_streams_through_the_worker_thread(engine: Any) -> None:
    """The real ExLlamaV2 job goes through the driver; a stand-in replaces the forward pass."""
    tokens = [*engine.encode(" quick brown"), 2]
    generators: list[ScriptedGenerator] = []

    def make() -> ScriptedGenerator:
        generators.append(ScriptedGenerator(tokens, engine.token_piece, capacity=768))
        return generators[-1]

    engine.driver = GeneratorDriver(make, "exllamav2-test")
    try:
        done = asyncio.run(collect(engine, request(engine, max_new_tokens=20)))
        assert done.text == " quick brown" and done.finish_reason == "stop"
        assert done.stop_reason == 2 and done.token_ids == tokens[:-1]
        too_long = request(engine)
        too_long.prompt_ids = [10] * 800
        with pytest.raises(ContextLengthError):
            asyncio.run(collect(engine, too_long))
        assert generators[0].iterations and not generators[0].pending
    finally:
        engine.driver.stop()
        engine.driver = None
