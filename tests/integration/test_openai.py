"""The OpenAI routes, driven by the official openai SDK against the real server."""

from __future__ import annotations

import json
import re
import threading
import time

import httpx
import jsonschema
import openai
import pytest

from tests.support.metrics import wait_until_idle
from tests.support.server import API_KEY, ServerProcess
from tests.support.sse import data_events

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)


def test_completion_shape(client: openai.OpenAI) -> None:
    answer = client.completions.create(model="x", prompt="The sky is", max_tokens=5, temperature=0)
    assert answer.id.startswith("cmpl-")
    assert answer.object == "text_completion"
    assert answer.model == "SmolLM2-135M-Instruct"
    assert answer.system_fingerprint
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 5
    assert answer.usage.prompt_tokens == 3
    assert answer.usage.total_tokens == 8
    assert answer.usage.prompt_tokens_details.cached_tokens == 0


def test_completion_stream_with_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model="x",
            prompt="The sky is",
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    whole = client.completions.create(model="x", prompt="The sky is", max_tokens=6, temperature=0)
    assert text == whole.choices[0].text


def test_chat_shape_and_stream(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="x", messages=QUESTION, max_tokens=10, temperature=0
    )
    assert answer.id.startswith("chatcmpl-")
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert "Paris" in answer.choices[0].message.content
    assert answer.usage.completion_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model="x",
            messages=QUESTION,
            max_tokens=10,
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


def test_n_choices_are_separate_jobs(client: openai.OpenAI) -> None:
    answer = client.completions.create(
        model="x",
        prompt="My favourite animal is",
        max_tokens=8,
        n=3,
        seed=3,
        temperature=1.0,
        extra_body={"min_tokens": 8},
    )
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert len({c.text for c in answer.choices}) > 1
    assert answer.usage.completion_tokens == 24
    chat = client.chat.completions.create(
        model="x", messages=QUESTION, max_tokens=4, n=3, temperature=0.9, seed=1
    )
    assert len(chat.choices) == 3


def test_several_prompts_and_token_prompts(client: openai.OpenAI) -> None:
    answer = client.completions.create(
        model="x", prompt=["One two", "Red green"], max_tokens=2, temperature=0
    )
    assert len(answer.choices) == 2
    tokens = client.completions.create(model="x", prompt=[6403, 1980, 253], max_tokens=2)
    assert tokens.usage.prompt_tokens == 3


def test_completion_logprobs_legacy_shape(client: openai.OpenAI) -> None:
    answer = client.completions.create(
        model="x", prompt="The sky is", max_tokens=4, temperature=0, logprobs=3
    )
    logprobs = answer.choices[0].logprobs
    assert len(logprobs.tokens) == 4 == len(logprobs.token_logprobs) == len(logprobs.text_offset)
    assert "".join(logprobs.tokens) == answer.choices[0].text
    assert all(lp <= 0 for lp in logprobs.token_logprobs)
    for chosen, top in zip(logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert len(top) <= 3 and max(top.values()) == pytest.approx(chosen, abs=1e-4)
    assert logprobs.text_offset == sorted(logprobs.text_offset)


def test_echo_includes_prompt_and_its_logprobs(client: openai.OpenAI) -> None:
    answer = client.completions.create(
        model="x", prompt="The sky is", max_tokens=3, echo=True, logprobs=1, temperature=0
    )
    choice = answer.choices[0]
    assert choice.text.startswith("The sky is")
    assert choice.logprobs.token_logprobs[0] is None
    assert len(choice.logprobs.tokens) == 3 + 3
    scored = client.completions.create(
        model="x", prompt="The sky is blue", max_tokens=0, echo=True, logprobs=0
    )
    assert scored.choices[0].text == "The sky is blue"
    assert scored.usage.completion_tokens == 0
    assert all(lp < 0 for lp in scored.choices[0].logprobs.token_logprobs[1:])


def test_chat_logprobs_shape(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="x", messages=QUESTION, max_tokens=4, logprobs=True, top_logprobs=2, temperature=0
    )
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens
    assert "".join(item.token for item in content) == answer.choices[0].message.content
    for item in content:
        assert bytes(item.bytes).decode() == item.token
        assert len(item.top_logprobs) == 2
        assert item.top_logprobs[0].logprob >= item.top_logprobs[1].logprob


def test_same_seed_same_text(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        return (
            client.completions.create(
                model="x", prompt="Once upon a time", max_tokens=12, temperature=1.0, seed=seed
            )
            .choices[0]
            .text
        )

    assert sample(7) == sample(7)
    assert len({sample(7), sample(8), sample(9)}) > 1


def test_stop_strings_end_the_text(client: openai.OpenAI) -> None:
    full = (
        client.completions.create(model="x", prompt="1, 2, 3, 4,", max_tokens=12, temperature=0)
        .choices[0]
        .text
    )
    assert " 6" in full
    stopped = client.completions.create(
        model="x", prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[" 6"]
    ).choices[0]
    assert stopped.text == full[: full.index(" 6")]
    assert stopped.finish_reason == "stop"


def test_json_schema_output_validates(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    answer = client.chat.completions.create(
        model="x",
        messages=[{"role": "user", "content": "Describe a person as JSON."}],
        max_tokens=60,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        },
    )
    jsonschema.validate(json.loads(answer.choices[0].message.content), schema)
    prompt = 'Reply with a JSON object giving the "city" and "country" of Paris.'
    anything = client.chat.completions.create(
        model="x",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_object"},
    )
    assert anything.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(anything.choices[0].message.content), dict)


def test_regex_output_matches(client: openai.OpenAI) -> None:
    pattern = r"[A-Z][a-z]{2,8} [0-9]{1,3}"
    answer = client.completions.create(
        model="x",
        prompt="A name and a number:",
        max_tokens=20,
        extra_body={"regex_pattern": pattern},
    )
    assert re.fullmatch(pattern, answer.choices[0].text)


def test_invalid_schema_or_grammar_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="Invalid"):
        client.completions.create(
            model="x", prompt="x", max_tokens=2, extra_body={"regex_pattern": "(unclosed"}
        )
    with pytest.raises(openai.BadRequestError, match="Lark grammar"):
        client.completions.create(
            model="x", prompt="x", max_tokens=2, extra_body={"grammar_string": "start: ( oops"}
        )


def test_unknown_response_format_and_bad_values_are_4xx(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(
            model="x", messages=QUESTION, response_format={"type": "yaml"}
        )
    with pytest.raises(openai.UnprocessableEntityError, match="max_tokens"):
        client.completions.create(model="x", prompt="x", max_tokens=-1)
    with pytest.raises(openai.BadRequestError, match="n may be at most"):
        client.completions.create(model="x", prompt="x", max_tokens=1, n=1000)
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        client.completions.create(model="x", prompt="x", max_tokens=1, logprobs=1000)


def test_prompt_over_the_context_is_400_before_streaming(server: ServerProcess) -> None:
    long_prompt = "word " * 9000
    for stream in (False, True):
        response = httpx.post(
            f"{server.url}/v1/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={"prompt": long_prompt, "max_tokens": 4, "stream": stream},
            timeout=60,
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "context_length_exceeded"


def test_concurrent_streams_all_progress(server: ServerProcess) -> None:
    first_token: list[float] = []
    finished: list[float] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with httpx.stream(
                "POST",
                f"{server.url}/v1/completions",
                headers={"Authorization": f"Bearer {API_KEY}"},
                json={
                    "prompt": "Tell me a story",
                    "max_tokens": 24,
                    "stream": True,
                    "min_tokens": 24,
                    "temperature": 0,
                },
                timeout=120,
            ) as response:
                seen = False
                for data in data_events(response):
                    if not seen and data != "[DONE]":
                        first_token.append(time.monotonic())
                        seen = True
                finished.append(time.monotonic())
        except BaseException as exc:  # reported below
            errors.append(exc)

    for count in (2, 8):
        first_token.clear()
        finished.clear()
        threads = [threading.Thread(target=run) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert len(first_token) == count == len(finished)
        # Every stream had produced text before the first one was done: they ran together.
        assert max(first_token) < min(finished)


def test_disconnect_mid_stream_cancels_the_job(server: ServerProcess) -> None:
    body = {"prompt": "Write a long essay", "max_tokens": 2000, "min_tokens": 2000, "stream": True}
    with httpx.stream(
        "POST",
        f"{server.url}/v1/completions",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json=body,
        timeout=60,
    ) as response:
        events = data_events(response)
        for _ in range(3):
            next(events)
    assert wait_until_idle(server.url, timeout=1.0)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        assert c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200


def test_disconnect_before_the_answer_cancels_a_blocking_request(server: ServerProcess) -> None:
    body = {"prompt": "Write a long essay", "max_tokens": 2000, "min_tokens": 2000}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server.url}/v1/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json=body,
            timeout=1.0,
        )
    assert wait_until_idle(server.url, timeout=1.0)


def test_encode_decode_round_trip(server: ServerProcess) -> None:
    with server.client() as c:
        text = "Serval says héllo 👋 <|im_start|>"
        tokens = c.post("/v1/token/encode", json={"text": text, "add_bos_token": False}).json()
        assert tokens["length"] == len(tokens["tokens"])
        assert "<|im_start|>" in text and 1 in tokens["tokens"]  # special tokens are parsed
        decoded = c.post("/v1/token/decode", json={"tokens": tokens["tokens"]}).json()
        assert decoded["text"] == text
        chat = c.post("/v1/token/encode", json={"text": QUESTION}).json()
        rendered = c.post("/v1/token/decode", json={"tokens": chat["tokens"]}).json()["text"]
        assert rendered.endswith("What is the capital of France?<|im_end|>\n")
        bad = c.post("/v1/token/decode", json={"tokens": [10**9]})
        assert bad.status_code == 400


def test_settings_the_engine_cannot_apply_are_named(server: ServerProcess) -> None:
    with server.client() as client:
        body = {"prompt": "Hi", "max_tokens": 2, "token_healing": True}
        response = client.post("/v1/completions", json=body)
        assert response.status_code == 200
        assert response.headers["x-serval-unsupported-params"] == "token_healing"
        plain = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
        assert "x-serval-unsupported-params" not in plain.headers
    assert "does not apply: token_healing" in server.log()
