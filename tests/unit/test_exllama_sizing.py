"""Cache sizes and job room for the ExLlama engines: what the generators would otherwise assert."""

from __future__ import annotations

import pytest

from backends.exllama.sizing import auto_rope_alpha, cache_mode, cache_tokens, job_room, rope_alpha
from common.errors import BadRequestError, ContextLengthError


def test_cache_size_is_a_multiple_of_256_and_holds_the_context() -> None:
    assert cache_tokens(None, 4096) == 4096
    assert cache_tokens(None, 1000) == 1024  # ExLlamaV2 refuses 1000
    assert cache_tokens(3000, 4096) == 3072
    assert cache_tokens(None, 512, minimum=2048) == 2048  # ExLlamaV3: one prefill chunk fits


def test_auto_rope_alpha_follows_the_context_ratio() -> None:
    assert auto_rope_alpha(4096, 4096) == 1.0
    assert auto_rope_alpha(2048, 4096) == 1.0
    assert auto_rope_alpha(8192, 4096) == pytest.approx(2.62978, abs=1e-4)
    assert rope_alpha("auto", 8192, 4096) == auto_rope_alpha(8192, 4096)
    assert rope_alpha(None, 8192, 4096) == 1.0
    assert rope_alpha(2.5, 8192, 4096) == 2.5


def test_cache_mode_names_are_checked() -> None:
    assert cache_mode("q4") == "Q4"
    with pytest.raises(BadRequestError, match="FP16, Q8, Q6, Q4"):
        cache_mode("FP8")


def test_job_room_clamps_max_tokens_and_refuses_a_prompt_that_does_not_fit() -> None:
    assert job_room(prompt_len=100, wanted=50, capacity=1024, reserve=4) == 50
    assert job_room(prompt_len=1000, wanted=50, capacity=1024, reserve=4) == 20
    with pytest.raises(ContextLengthError, match="1024 tokens"):
        job_room(prompt_len=1020, wanted=50, capacity=1024, reserve=4)
