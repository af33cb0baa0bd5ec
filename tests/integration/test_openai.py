"""The OpenAI routes, driven by the official openai SDK against the real server (what every
engine must do alike is in tests/conformance/)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import jsonschema
import openai
import pytest

from tests.support.server import API_KEY, ServerProcess
from tests.support.sse import data_events

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)


def test_several_prompts_and_token_prompts(client: openai.OpenAI) -> None:
    answer = client.completions.create(
        model="x", prompt=["One two", "Red green"], max_tokens=2, temperature=0
    )
    assert len(answer.choices) == 2
    tokens = client.completions.create(model="x", prompt=[6403, 1980, 253], max_tokens=2)
    assert tokens.usage.prompt_tokens == 3


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
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="x", messages=QUESTION, response_format={"type": "yaml"}
        )
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="x", prompt="x", max_tokens=-1)
    with pytest.raises(openai.BadRequestError, match="n may be at most"):
        client.completions.create(model="x", prompt="x", max_tokens=1, n=1000)
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        client.completions.create(model="x", prompt="x", max_tokens=1, logprobs=1000)


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
