"""The ExLlama engines on a real GPU, against the transformers model on the same fp16 weights."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import openai

from backends.base import DraftOptions
from tests.support.server import API_KEY, ServerProcess

PROMPTS = ("Once upon a time", "The quick brown fox jumps over", "def main():\n    return")


def test_next_token_logits_match_transformers(
    check: ModuleType, engine: Any, reference: Any
) -> None:
    for text in PROMPTS:
        prompt = engine.encode(text)
        report = check.compare_logits(
            check.engine_logits(engine, prompt), check.reference_logits(reference, prompt)
        )
        assert report.ok, f"{engine.backend} on {text!r}: {report}"


def test_greedy_tokens_match_transformers_for_16_steps(
    check: ModuleType, engine: Any, reference: Any
) -> None:
    for text in PROMPTS:
        prompt = engine.encode(text)
        (ours,) = check.generate_ids(
            engine, [check.greedy_request(engine, prompt, check.GREEDY_STEPS)]
        )
        theirs, logits = check.reference_greedy(reference, prompt, check.GREEDY_STEPS)
        assert len(ours) == check.GREEDY_STEPS
        report = check.compare_greedy(ours, theirs, logits)
        assert report.ok, f"{engine.backend} on {text!r}: {ours} vs {theirs}"


def test_a_lora_changes_the_output_as_peft_does_and_unloads_cleanly(
    check: ModuleType, engine: Any, check_models: Path
) -> None:
    prompt = engine.encode(PROMPTS[0])
    request = check.greedy_request(engine, prompt, 8)
    (before,) = check.generate_ids(engine, [request])
    result = asyncio.run(engine.load_loras([(check_models / "tiny-lora", "tiny-lora", 1.0)]))
    assert result == {"success": ["tiny-lora"], "failure": []}
    (adapted,) = check.generate_ids(engine, [request])
    with_peft = check.reference_model(check_models / "tiny", check_models / "tiny-lora")
    theirs, logits = check.reference_greedy(with_peft, prompt, 8)
    assert check.compare_greedy(adapted, theirs, logits).ok, f"{adapted} vs {theirs}"
    assert adapted != before
    asyncio.run(engine.unload_loras())
    assert check.generate_ids(engine, [request]) == [before]


def test_speculative_decoding_with_the_model_as_its_own_draft(
    check: ModuleType, engine: Any, check_models: Path, backend: str
) -> None:
    """Same greedy text as without a draft, and exactly max_tokens (ExLlamaV2 ends drafting
    jobs num_draft_tokens early unless asked for more)."""
    prompt = engine.encode(PROMPTS[1])
    (plain,) = check.generate_ids(engine, [check.greedy_request(engine, prompt, 32)])
    for draft in (DraftOptions(path=check_models / "tiny"), DraftOptions(path=None, mode="ngram")):
        drafting = check.load_engine(backend, check_models / "tiny", max_seq_len=2048, draft=draft)
        try:
            (drafted,) = check.generate_ids(drafting, [check.greedy_request(drafting, prompt, 32)])
        finally:
            asyncio.run(drafting.unload())
        assert len(drafted) == 32, draft
        assert drafted == plain, f"{draft.mode}: {drafted} vs {plain}"


def test_eight_concurrent_streams_over_http(served: ServerProcess) -> None:
    client = openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key=API_KEY)

    async def stream(seed: int) -> tuple[str, str | None]:
        text, finish = "", None
        chunks = await client.completions.create(
            model="tiny", prompt="Once upon a time", max_tokens=24, seed=seed, stream=True
        )
        async for chunk in chunks:
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
        return text, finish

    async def run() -> list[tuple[str, str | None]]:
        return await asyncio.gather(*(stream(seed) for seed in range(8)))

    results = asyncio.run(run())
    assert len(results) == 8 and all(finish in ("stop", "length") for _, finish in results)
    assert any(text for text, _ in results)


def test_json_schema_output_over_http(served: ServerProcess) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=API_KEY)
    answer = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Give me a person as JSON."}],
        max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    )
    person = json.loads(answer.choices[0].message.content or "")
    assert set(person) == {"name", "age"} and isinstance(person["age"], int)


def test_a_lora_over_http_changes_the_answer_and_unloading_restores_it(
    served: ServerProcess,
) -> None:
    """What the conformance suite cannot show over the stand-in generator, through the same
    route and model container: POST /v1/lora/load on a real model."""
    body = {"prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0}
    with served.admin() as admin:

        def answer() -> str:
            response = admin.post("/v1/completions", json=body)
            assert response.status_code == 200, response.text
            return response.json()["choices"][0]["text"]

        before = answer()
        loaded = admin.post("/v1/lora/load", json={"loras": [{"name": "tiny-lora"}]})
        assert loaded.json() == {"success": ["tiny-lora"], "failure": []}
        adapted = answer()
        assert admin.post("/v1/lora/unload").status_code == 200
        after = answer()
    assert adapted != before
    assert after == before


def test_seeded_choices_differ_over_http(served: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=API_KEY)
    answer = client.completions.create(
        model="tiny", prompt=PROMPTS[0], max_tokens=8, n=3, seed=3, temperature=1.0
    )
    assert len({choice.text for choice in answer.choices}) > 1
