"""Reading the result dicts of an ExLlama generator into chunks.

The dicts are shaped as ExLlamaV2 0.3.2 and ExLlamaV3 1.6.5 emit them (recorded on an H100,
see docs/exllama.md, section 6); the reader is Serval's own code.
"""

from __future__ import annotations

import math

import pytest
import torch

from backends.exllama.results import ResultReader

PIECES = {0: "<unk>", 1: "<s>", 2: "</s>", 10: "Hel", 11: "lo", 12: " world", 13: "!"}


def reader(**kwargs) -> ResultReader:
    return ResultReader(piece=lambda t: PIECES.get(t, ""), vocab_size=14, **kwargs)


def ids(*tokens: int) -> torch.Tensor:
    return torch.tensor([tokens], dtype=torch.long)


def final(reason: str, **extra) -> dict:
    return {
        "stage": "streaming",
        "eos": True,
        "eos_reason": reason,
        "new_tokens": 3,
        "prompt_tokens": 5,
        "cached_tokens": 2,
        "time_enqueued": 0.1,
        "time_prefill": 0.2,
        "time_generate": 0.3,
        **extra,
    }


def test_started_and_prefill_results_are_not_chunks() -> None:
    assert reader().read({"stage": "started", "eos": False}) is None
    assert reader().read({"stage": "prefill", "eos": False, "curr_progress": 3}) is None


def test_streamed_text_and_token_ids() -> None:
    chunk = reader().read(
        {"stage": "streaming", "eos": False, "text": "Hello", "token_ids": ids(10, 11)}
    )
    assert chunk is not None
    assert (chunk.text, chunk.token_ids, chunk.logprobs) == ("Hello", [10, 11], None)


def test_a_stop_token_ends_with_the_held_text_minus_its_own_piece() -> None:
    result = final(
        "stop_token",
        eos_triggering_token_id=2,
        held={"text": " world</s>", "token_ids": ids(12, 2)},
    )
    chunk = reader().read(result)
    assert chunk is not None
    assert chunk.text == " world"
    assert chunk.token_ids == [12]
    assert chunk.finish_reason == "stop"
    assert chunk.stop_reason == 2
    assert chunk.stats is not None
    assert (chunk.stats.prompt_tokens, chunk.stats.completion_tokens) == (5, 3)
    assert chunk.stats.cached_tokens == 2
    assert chunk.stats.total_time == pytest.approx(0.6)


def test_a_stop_string_keeps_only_the_text_before_it() -> None:
    result = final("stop_string", eos_triggering_string="!", text=" world", token_ids=ids(12, 13))
    chunk = reader().read(result)
    assert chunk is not None
    assert (chunk.text, chunk.finish_reason, chunk.stop_reason) == (" world", "stop", "!")


def test_max_new_tokens_is_length_and_a_finished_grammar_is_stop() -> None:
    length = reader().read(final("max_new_tokens", text="lo", token_ids=ids(11)))
    grammar = reader().read(final("end_filter", text="}", token_ids=ids(13)))
    assert length is not None and length.finish_reason == "length"
    assert grammar is not None and grammar.finish_reason == "stop"


def test_logprobs_come_from_the_logits_without_the_padding_columns() -> None:
    logits = torch.full((1, 2, 32), -5.0)  # padded to 32 columns; 14 real tokens
    logits[0, 0, 10] = 3.0
    logits[0, 1, 11] = 2.0
    logits[0, :, 20] = 50.0  # padding column: must not count
    chunk = reader(logprobs=2).read(
        {
            "stage": "streaming",
            "eos": False,
            "text": "Hello",
            "token_ids": ids(10, 11),
            "logits": logits,
        }
    )
    assert chunk is not None and chunk.logprobs is not None
    first = chunk.logprobs[0]
    expected = 3.0 - math.log(math.exp(3.0) + 13 * math.exp(-5.0))
    assert first.token == "Hel"
    assert abs(first.logprob - expected) < 1e-5
    assert next(top[0] for top in first.top) == 10
    assert all(top[0] < 14 for record in chunk.logprobs for top in record.top)


def test_tokens_of_a_rewound_banned_string_are_dropped() -> None:
    """ExLlamaV2 0.3.2 keeps them in token_ids after rewinding (a typo in its rewind code)."""
    result = {
        "stage": "streaming",
        "eos": False,
        "text": "Hel",
        "token_ids": ids(10, 12, 13),
        "suppressed_text": " world!",
        "suppressed_tokens": ids(12, 13),
    }
    chunk = reader(tokens_outlive_rewind=True).read(result)
    assert chunk is not None and chunk.token_ids == [10]
