"""The llama.cpp engine's cache: a slot keeps its tokens, so a prompt that begins with what it
holds (the same prompt again, a chat's next turn) is fed only from there, answers as it would
from an empty cache, and says so in ``cached_tokens``; a full cache drops those tokens, a LoRA
change forgets them, and requests that would not fit together wait for room instead of
failing."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from backends.registry import unavailable_reason
from tests.conftest import DEFAULT_GGUF_MODEL, DEFAULT_MODEL
from tests.support.server import ServerProcess
from tests.support.tiny_lora import build_tiny_lora

CACHE_TOKENS = 1024  # four slots of a few hundred tokens each do not fit together
STORY = "Once upon a time, in a land far away, there lived a dragon who"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if unavailable_reason("llamacpp") is not None:
        pytest.skip(f"llama.cpp is unavailable here: {unavailable_reason('llamacpp')}")
    base = tmp_path_factory.mktemp("prefix-cache")
    build_tiny_lora(DEFAULT_MODEL, base / "loras" / "smol-lora")
    config = {
        "network": {"key_share": 1.0},  # one key may take every slot
        "model": {
            "model_dir": str(DEFAULT_GGUF_MODEL.parent),
            "model_name": DEFAULT_GGUF_MODEL.name,
            "max_seq_len": 512,
            "cache_size": CACHE_TOKENS,
            "max_batch_size": 4,
        },
        "lora": {"lora_dir": str(base / "loras")},
        "embeddings": {"embedding_model_name": None},
    }
    process = ServerProcess(base / "server", config).start()
    yield process
    process.stop()


def complete(client: httpx.Client, prompt: str, **fields: Any) -> dict[str, Any]:
    body = {"prompt": prompt, "max_tokens": 12, "temperature": 0, "logprobs": 1, **fields}
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def cached(answer: dict[str, Any]) -> int:
    return int(answer["usage"]["prompt_tokens_details"]["cached_tokens"])


def test_the_same_prompt_again_is_fed_from_its_last_token_and_answers_alike(
    server: ServerProcess,
) -> None:
    with server.client() as client:
        first = complete(client, STORY + " 1")
        again = complete(client, STORY + " 1")
    # Every prompt token but the last (whose logits give the first new token) was cached.
    assert cached(again) == again["usage"]["prompt_tokens"] - 1
    assert again["choices"][0]["text"] == first["choices"][0]["text"]
    first_logprobs = first["choices"][0]["logprobs"]["token_logprobs"]
    again_logprobs = again["choices"][0]["logprobs"]["token_logprobs"]
    assert again_logprobs == pytest.approx(first_logprobs, abs=1e-3)


def test_a_chats_next_turn_reuses_the_conversation_so_far(server: ServerProcess) -> None:
    messages = [{"role": "user", "content": "Tell me about the sea."}]
    with server.client() as client:
        turn = client.post(
            "/v1/chat/completions", json={"messages": messages, "max_tokens": 16}
        ).json()
        messages += [
            {"role": "assistant", "content": turn["choices"][0]["message"]["content"]},
            {"role": "user", "content": "And then?"},
        ]
        next_turn = client.post(
            "/v1/chat/completions", json={"messages": messages, "max_tokens": 4}
        ).json()
    assert cached(next_turn) >= turn["usage"]["prompt_tokens"]
    assert next_turn["usage"]["prompt_tokens"] > cached(next_turn)


def test_prompts_that_fill_the_cache_push_the_cached_tokens_out(server: ServerProcess) -> None:
    # Each prompt leaves about 400 tokens in a free slot: the third finds no room until the
    # free slots' tokens are dropped (without that, "The K/V cache is full").
    with server.client() as client:
        for number in range(6):
            prompt = f"{number} " + "the quick brown fox jumps over the lazy dog " * 40
            answer = complete(client, prompt, max_tokens=4)
            assert answer["usage"]["prompt_tokens"] > CACHE_TOKENS // 3
        assert cached(complete(client, prompt, max_tokens=4)) > 0  # the last one is kept


def test_prompt_logprobs_feed_every_prompt_token(server: ServerProcess) -> None:
    with server.client() as client:
        complete(client, STORY + " 2")
        scored = complete(client, STORY + " 2", echo=True, max_tokens=1)
    assert cached(scored) == 0
    prompt_tokens = scored["usage"]["prompt_tokens"]
    assert len(scored["choices"][0]["logprobs"]["token_logprobs"]) == prompt_tokens + 1


def test_a_lora_change_forgets_the_cached_tokens(server: ServerProcess) -> None:
    with server.admin() as admin:
        before = complete(admin, STORY + " 3")
        body = {"loras": [{"name": "smol-lora", "scaling": 1.0}]}
        assert admin.post("/v1/lora/load", json=body).status_code == 200
        with_lora = complete(admin, STORY + " 3")
        assert admin.post("/v1/lora/unload").status_code == 200
        after = complete(admin, STORY + " 3")
    assert cached(with_lora) == 0 and cached(after) == 0
    assert with_lora["choices"][0]["text"] != before["choices"][0]["text"]
    assert after["choices"][0]["text"] == before["choices"][0]["text"]


def test_requests_that_do_not_fit_together_wait_for_room_and_all_answer(
    server: ServerProcess,
) -> None:
    # Four prompts of about 300 tokens, each to grow by 100: 1600 cells in a cache of 1024.
    # Two run while two wait; without that wait the cache filled half-way and every running
    # request failed with a 500.
    prompts = [f"{n} " + "the quick brown fox jumps over the lazy dog " * 30 for n in range(4)]

    def ask(prompt: str) -> httpx.Response:
        with server.client() as client:
            body = {"prompt": prompt, "max_tokens": 100, "temperature": 0, "ignore_eos": True}
            return client.post("/v1/completions", json=body)

    with ThreadPoolExecutor(len(prompts)) as pool:
        answers = list(pool.map(ask, prompts))
    assert [answer.status_code for answer in answers] == [200] * 4, answers[0].text
    assert all(answer.json()["usage"]["completion_tokens"] == 100 for answer in answers)
