"""Kobold request parsing, context fitting and the genkey registry, without a server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

import pytest
from pydantic import ValidationError

from backends.base import GenerationChunk
from common.errors import ConflictError
from common.sampling import resolve
from endpoints.Kobold.jobs import JobRegistry, Update, owner_of
from endpoints.Kobold.plan import fit_prompt, generation_budget, keep_tail, kobold_params
from endpoints.Kobold.types.generation import GenerateRequest
from tests.support.kobold import LITE_SAMPLER_ORDER, LITE_SAMPLERS

BOS = 1


def test_budget_leaves_room_for_max_length_in_the_requested_context() -> None:
    assert generation_budget(None, 8192, 200) == (7992, 200)
    assert generation_budget(64, 8192, 8) == (56, 8)
    # A context larger than the model's is the model's.
    assert generation_budget(100_000, 8192, 200) == (7992, 200)


def test_budget_shortens_a_max_length_that_would_leave_no_prompt() -> None:
    # KoboldCpp keeps at least 16 prompt tokens (fewer in a tiny context).
    assert generation_budget(64, 8192, 100) == (16, 48)
    assert generation_budget(3, 8192, 10) == (1, 2)


def test_keep_tail_cuts_from_the_left_and_keeps_bos() -> None:
    assert keep_tail([5, 6, 7, 8], 2, None) == [7, 8]
    assert keep_tail([BOS, 5, 6, 7, 8], 3, BOS) == [BOS, 7, 8]
    assert keep_tail([BOS, 5, 6], 5, BOS) == [BOS, 5, 6]


def test_memory_stays_in_front_and_the_prompt_gives_way() -> None:
    memory = [BOS, 50, 51]
    prompt = [BOS, 10, 11, 12, 13, 14]
    assert fit_prompt(memory, prompt, 6, BOS) == [BOS, 50, 51, 12, 13, 14]
    # Memory longer than the budget is itself cut from the left.
    assert fit_prompt([BOS, 50, 51, 52, 53], prompt, 3, BOS) == [BOS, 52, 53]
    assert fit_prompt([], prompt, 3, BOS) == [BOS, 13, 14]


def test_kobold_names_map_onto_shared_settings() -> None:
    body = GenerateRequest.model_validate(
        {
            "prompt": "x",
            "max_length": 12,
            "rep_pen": 1.1,
            "rep_pen_range": 0,
            "sampler_order": [*LITE_SAMPLER_ORDER, 0],  # a repeated id counts once
            "sampler_seed": 7,
            "use_default_badwordsids": True,
            "stop_sequence": ["\n", None, ""],
            "banned_tokens": ["shivers", 42],
            "custom_token_bans": "3,4",
        }
    )
    params = kobold_params(body, resolve(body))
    assert params.max_tokens == 12
    assert params.repetition_penalty == 1.1
    assert params.penalty_range == 0  # the whole context
    assert params.sampler_order == LITE_SAMPLERS
    assert params.seed == 7
    assert params.ban_eos_token is True
    assert params.stop == ("\n",)
    assert params.banned_strings == ("shivers",)
    assert params.banned_tokens == (42,)


def test_a_negative_seed_means_random() -> None:
    for field in ("sampler_seed", "seed"):
        body = GenerateRequest.model_validate({"prompt": "x", field: -1})
        assert resolve(body).seed is None


def test_csv_token_bans_still_work_under_the_kobold_name() -> None:
    body = GenerateRequest.model_validate({"prompt": "x", "banned_tokens": "3, 4"})
    assert resolve(body).banned_tokens == (3, 4)


def test_dynatemp_range_spreads_around_the_temperature() -> None:
    body = GenerateRequest.model_validate({"prompt": "x", "temperature": 0.5, "dynatemp_range": 1})
    params = kobold_params(body, resolve(body))
    assert (params.min_temp, params.max_temp) == (0.0, 1.5)
    assert params.dynamic_temperature
    explicit = GenerateRequest.model_validate(
        {"prompt": "x", "temperature": 1, "dynatemp_range": 1, "dynatemp_low": 0.8, "max_temp": 1.2}
    )
    params = kobold_params(explicit, resolve(explicit))
    assert (params.min_temp, params.max_temp) == (0.8, 1.2)


@pytest.mark.parametrize("order", [[7], [-1], ["top_k"], [1.5]])
def test_unknown_sampler_ids_are_refused(order: list) -> None:
    with pytest.raises(ValidationError):
        GenerateRequest.model_validate({"prompt": "x", "sampler_order": order})


async def _chunks(count: int, delay: float = 0.0) -> AsyncGenerator[Update]:
    for _ in range(count):
        await asyncio.sleep(delay)
        yield 0, GenerationChunk(text="a", token_ids=[1])
    yield 0, GenerationChunk(finish_reason="length")


def test_genkeys_are_scoped_to_their_key() -> None:
    async def scenario() -> None:
        registry = JobRegistry()
        alice, bob = owner_of("alice-key"), owner_of("bob-key")
        job = registry.open(alice, "g1", 1, stream=False)
        job.start(_chunks(1000, delay=0.01), on_end=lambda: None)
        assert registry.find(bob, "g1") == []
        assert registry.find(bob, None) == []
        with pytest.raises(ConflictError):
            registry.open(alice, "g1", 1, stream=False)
        other = registry.open(bob, "g1", 1, stream=False)  # the same genkey, another key
        assert other is not job
        await asyncio.sleep(0.05)
        assert registry.find(alice, "g1")[0].completions[0].text.startswith("a")
        assert await job.abort() is True
        assert job.aborted and not job.running
        assert await job.abort() is False
        assert "alice-key" not in repr(registry._jobs)

    asyncio.run(scenario())


def test_abort_ends_the_job_and_releases_it_once() -> None:
    async def scenario() -> None:
        released: list[int] = []
        job = JobRegistry().open(owner_of("k"), "g", 1, stream=True)
        job.start(_chunks(1000, delay=0.01), on_end=lambda: released.append(1))
        seen = []
        async for _, chunk in job.updates():
            seen.append(chunk.text)
            if len(seen) == 3:
                assert await job.abort()
        assert released == [1]
        assert 3 <= len(job.completions[0].text) < 1000

    asyncio.run(scenario())


def test_finished_jobs_are_kept_briefly_and_only_so_many() -> None:
    async def scenario() -> None:
        registry = JobRegistry(keep_seconds=60, max_finished=3)
        owner = owner_of("k")
        for index in range(5):
            job = registry.open(owner, f"g{index}", 1, stream=False)
            job.start(_chunks(1), on_end=lambda: None)
            await job.wait()
        registry.find(owner, None)
        assert [job.genkey for job in registry.find(owner, None)] == ["g2", "g3", "g4"]
        registry.keep_seconds = 0.0
        time.sleep(0.01)
        assert registry.find(owner, None) == []
        assert len(registry) == 0

    asyncio.run(scenario())
