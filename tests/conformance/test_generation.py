"""Completions, chat and responses through the OpenAI SDK, the same on every engine: shapes,
streaming, n, stop strings, logprobs, clamping, context-length errors, a grammar, CFG, unapplied
sampler settings."""

from __future__ import annotations

import re
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conformance.conftest import Served
from tests.support.server import API_KEY

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]

# Sampler settings that some engine cannot apply, each with the name the server reports in
# X-Serval-Unsupported-Params and the engines that report it (the others apply it). A new
# sampler field adds one line here and is then checked on every engine.
UNAPPLIED: list[tuple[dict[str, Any], str, set[str]]] = [
    ({"token_healing": True}, "token_healing", {"transformers", "llamacpp"}),
    ({"mirostat_mode": 1, "mirostat_tau": 5.0}, "mirostat_mode", {"exllamav2", "exllamav3"}),
    ({"mirostat_mode": 2, "mirostat_tau": 5.0}, "mirostat_mode", {"exllamav3"}),
    ({"tfs": 0.9}, "tfs", {"exllamav3"}),
    ({"top_a": 0.2}, "top_a", {"exllamav3"}),
    ({"repetition_penalty": 1.1, "repetition_penalty_slope": 0.5}, "repetition_penalty_slope",
     {"exllamav2", "exllamav3"}),
    # CFG: ExLlamaV2 only in paged mode (its stand-in runs unpaged), ExLlamaV3 1.6.5 not at all.
    ({"cfg_scale": 2.0, "negative_prompt": "No."}, "cfg_scale", {"exllamav2", "exllamav3"}),
    ({"guidance_scale": 2.0}, "cfg_scale", {"exllamav2", "exllamav3"}),
]  # fmt: skip
CFG_UNAPPLIED = UNAPPLIED[-1][2]


def sdk(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.server.url}/v1", api_key=API_KEY, max_retries=0)


def context_of(served: Served) -> int:
    with served.server.client() as client:
        return int(client.get("/v1/model").json()["parameters"]["max_seq_len"])


def a_token(served: Served) -> int:
    with served.server.client() as client:
        body = {"text": " the", "add_bos_token": False}
        return int(client.post("/v1/token/encode", json=body).json()["tokens"][-1])


def test_completion_shape_and_stream(served: Served) -> None:
    client = sdk(served)
    answer = client.completions.create(model="x", prompt="The sky is", max_tokens=5, temperature=0)
    assert answer.id.startswith("cmpl-") and answer.object == "text_completion"
    assert answer.model == served.model and answer.system_fingerprint
    assert answer.choices[0].finish_reason == "length" and answer.choices[0].text
    usage = answer.usage
    assert usage.completion_tokens == 5 and usage.prompt_tokens >= 3
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    chunks = list(
        client.completions.create(
            model="x",
            prompt="The sky is",
            max_tokens=5,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert "".join(c.choices[0].text for c in chunks if c.choices) == answer.choices[0].text


def test_chat_shape_and_stream(served: Served) -> None:
    client = sdk(served)
    answer = client.chat.completions.create(
        model="x", messages=QUESTION, max_tokens=6, temperature=0
    )
    assert answer.id.startswith("chatcmpl-") and answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert answer.usage.completion_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model="x",
            messages=QUESTION,
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == answer.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens


def test_responses_answer_and_stream(served: Served) -> None:
    client = sdk(served)
    request = dict(model="x", input=QUESTION[0]["content"], max_output_tokens=6, temperature=0)
    answer = client.responses.create(**request)
    assert answer.id.startswith("resp_") and answer.object == "response"
    assert answer.model == served.model and answer.usage.output_tokens > 0
    events = list(client.responses.create(**request, stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert [event.sequence_number for event in events] == list(range(len(events)))
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed == answer.output_text == events[-1].response.output_text
    assert events[-1].response.usage.output_tokens == answer.usage.output_tokens


def test_anthropic_message_and_stream(served: Served) -> None:
    """The Messages API on the chat path: the same answer plain and streamed."""
    client = anthropic.Anthropic(base_url=served.server.url, api_key=API_KEY, max_retries=0)
    ask: dict[str, Any] = {
        "model": "x",
        "max_tokens": 6,
        "messages": QUESTION,
        "extra_body": {"temperature": 0, "min_tokens": 6},
    }
    answer = client.messages.create(**ask)
    assert answer.type == "message" and answer.stop_reason == "max_tokens"
    assert answer.usage.output_tokens == 6 and answer.usage.input_tokens > 0
    with client.messages.stream(**ask) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    text = "".join(block.text for block in answer.content if block.type == "text")
    assert streamed == text
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 6


def test_n_choices_are_separate_jobs(served: Served) -> None:
    client = sdk(served)
    answer = client.completions.create(
        model="x",
        prompt="My favourite animal is",
        max_tokens=4,
        n=3,
        seed=3,
        temperature=1.0,
        extra_body={"min_tokens": 4},
    )
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert answer.usage.completion_tokens == 12
    chat = client.chat.completions.create(
        model="x", messages=QUESTION, max_tokens=3, n=2, temperature=0.9, seed=1
    )
    assert [c.index for c in chat.choices] == [0, 1]


def test_greedy_choices_of_one_prompt_share_its_prefill_and_agree(served: Served) -> None:
    """llamacpp prefills a prompt sent n times once and gives every choice its cache cells;
    a choice that lost them (or took another's row) would answer differently."""
    if served.backend != "llamacpp":
        pytest.skip("only the llamacpp engine shares the cache of a prompt sent n times")
    answer = sdk(served).completions.create(
        model="x", prompt="The sea is", max_tokens=12, n=4, temperature=0
    )
    texts = [choice.text for choice in answer.choices]
    assert texts[0].strip()
    assert texts == [texts[0]] * 4


def test_seeded_choices_differ(served: Served) -> None:
    served.needs_real_logits("sampling that differs between seeds")
    answer = sdk(served).completions.create(
        model="x", prompt="My favourite animal is", max_tokens=8, n=3, seed=3, temperature=1.0
    )
    assert len({c.text for c in answer.choices}) > 1


def test_stop_strings_end_the_text(served: Served) -> None:
    client = sdk(served)
    prompt = "1, 2, 3, 4,"
    full = client.completions.create(model="x", prompt=prompt, max_tokens=8, temperature=0)
    text = full.choices[0].text
    middle = len(text) // 2
    stop = text[middle : middle + 2]
    assert stop.strip(), f"no stop string to take from {text!r}"
    stopped = client.completions.create(
        model="x", prompt=prompt, max_tokens=8, temperature=0, stop=[stop]
    ).choices[0]
    assert stopped.text == text[: text.index(stop)]
    assert stopped.finish_reason == "stop"
    chunks = client.completions.create(
        model="x", prompt=prompt, max_tokens=8, temperature=0, stop=[stop], stream=True
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == stopped.text


def test_completion_and_chat_logprobs(served: Served) -> None:
    client = sdk(served)
    answer = client.completions.create(
        model="x", prompt="The sky is", max_tokens=4, temperature=0, logprobs=2
    )
    logprobs = answer.choices[0].logprobs
    assert len(logprobs.tokens) == 4 == len(logprobs.token_logprobs) == len(logprobs.text_offset)
    assert "".join(logprobs.tokens) == answer.choices[0].text
    assert all(lp <= 0 for lp in logprobs.token_logprobs)
    for chosen, top in zip(logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert len(top) <= 2 and max(top.values()) == pytest.approx(chosen, abs=1e-4)
    assert logprobs.text_offset == sorted(logprobs.text_offset)
    chat = client.chat.completions.create(
        model="x", messages=QUESTION, max_tokens=4, logprobs=True, top_logprobs=2, temperature=0
    )
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    assert "".join(item.token for item in content) == chat.choices[0].message.content
    for item in content:
        assert bytes(item.bytes).decode() == item.token
        assert len(item.top_logprobs) == 2
        assert item.top_logprobs[0].logprob >= item.top_logprobs[1].logprob


def test_max_tokens_is_clamped_to_the_context_left(served: Served) -> None:
    context, token = context_of(served), a_token(served)
    with served.server.client() as client:
        body = {"prompt": [token] * (context - 3), "max_tokens": 10, "temperature": 0}
        answer = client.post("/v1/completions", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["finish_reason"] == "length"
        assert answer.json()["usage"]["completion_tokens"] <= 3
        too_many = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": context + 1})
        assert too_many.status_code == 400
        assert too_many.json()["error"]["param"] == "max_tokens"


def test_prompt_over_the_context_is_400_before_streaming(served: Served) -> None:
    prompt = [a_token(served)] * (context_of(served) + 5)
    for stream in (False, True):
        response = httpx.post(
            f"{served.server.url}/v1/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={"prompt": prompt, "max_tokens": 4, "stream": stream},
            timeout=60,
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "context_length_exceeded"


def test_a_grammar_constrains_the_output(served: Served) -> None:
    answer = sdk(served).completions.create(
        model="x",
        prompt="Is the sky blue? Answer yes or no:",
        max_tokens=8,
        temperature=0,
        extra_body={"regex_pattern": "(yes|no)"},
    )
    assert re.fullmatch("yes|no", answer.choices[0].text)
    assert answer.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(("fields", "name", "engines"), UNAPPLIED)
def test_settings_the_engine_cannot_apply_are_named(
    served: Served, fields: dict[str, Any], name: str, engines: set[str]
) -> None:
    with served.server.client() as client:
        response = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2, **fields})
    assert response.status_code == 200, response.text
    named = response.headers.get("x-serval-unsupported-params", "").split(",")
    assert (name in named) == (served.backend in engines), named
    if served.backend in engines:
        assert f"does not apply: {name}" in served.server.log()


# A negative prompt that is the likely continuation: CFG at 3 steers greedy text away from it.
CFG_PROMPT = "The capital of France is"
CFG = {"cfg_scale": 3.0, "negative_prompt": "The capital of France is Paris, a city"}


def test_cfg_steers_greedy_text_away_from_the_negative_prompt(served: Served) -> None:
    if served.backend in CFG_UNAPPLIED:
        pytest.skip(f"{served.backend} names cfg_scale as not applied (checked above)")
    client = sdk(served)

    def complete(**extra: Any) -> str:
        raw = client.completions.with_raw_response.create(
            model="x", prompt=CFG_PROMPT, max_tokens=8, temperature=0, extra_body=extra
        )
        assert "cfg_scale" not in raw.headers.get("x-serval-unsupported-params", "")
        return raw.parse().choices[0].text

    plain = complete()
    assert complete(cfg_scale=1, negative_prompt=CFG["negative_prompt"]) == plain
    guided = complete(**CFG)
    assert guided != plain and complete(**CFG) == guided
    stream = client.completions.create(
        model="x", prompt=CFG_PROMPT, max_tokens=8, temperature=0, stream=True, extra_body=CFG
    )
    assert "".join(chunk.choices[0].text for chunk in stream) == guided
    answer = client.completions.create(
        model="x", prompt=CFG_PROMPT, max_tokens=4, n=2, seed=5, temperature=1.0,
        extra_body={**CFG, "min_tokens": 4},
    )  # fmt: skip
    assert [c.index for c in answer.choices] == [0, 1] and answer.usage.completion_tokens == 8
    chat = client.chat.completions.create(
        model="x", messages=QUESTION, max_tokens=4, temperature=0, stream=True, extra_body=CFG
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chat if chunk.choices)


def test_bad_cfg_settings_are_400(served: Served) -> None:
    long_negative = " the" * (context_of(served) + 5)
    with served.server.client() as client:
        for body, param in (
            ({"cfg_scale": 0}, "cfg_scale"),
            ({"cfg_scale": 2, "negative_prompt": long_negative}, "negative_prompt"),
        ):
            for stream in (False, True):
                response = client.post(
                    "/v1/completions",
                    json={"prompt": "Hi", "max_tokens": 2, "stream": stream, **body},
                )
                assert response.status_code == 400, response.text
                assert param in str(response.json()["error"]["param"]), response.text
