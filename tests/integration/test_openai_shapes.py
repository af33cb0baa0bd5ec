"""Every OpenAI response shape Serval serves, checked against the official OpenAPI document.

The schemas are ``components.schemas`` of openai/openai-openapi's openapi.json, info.version
2.3.0 (commit f85dbe22, 2026-08-21), in tests/fixtures/openai/openapi_shapes.json: their
required fields, types, enums and nullability, as strict clients (the SDKs' generated models,
instructor, openai-agents) read them. A field the spec allows only to be absent, such as
``message.tool_calls``, fails as null; a required one, such as ``message.refusal``, fails when
missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.support.server import API_KEY, ROOT, ServerProcess
from tests.support.sse import json_events

SHAPES = json.loads((ROOT / "tests" / "fixtures" / "openai" / "openapi_shapes.json").read_text())
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def _null_finish_reason(error: jsonschema.ValidationError) -> bool:
    path = error.absolute_path
    return error.instance is None and bool(path) and path[-1] == "finish_reason"


def check(schema: str, instance: Any, running: bool = False) -> None:
    """``instance`` is a valid ``schema`` of the OpenAPI document (every problem listed).

    ``running``: a text_completion chunk before the last. The document gives streamed and whole
    text completions one shape, whose ``finish_reason`` is never null, but OpenAI streams null
    until the last chunk (and the SDKs read it so); only that null is let through.
    """
    validator = jsonschema.Draft202012Validator({"$ref": f"#/$defs/{schema}", **SHAPES})
    problems = [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(instance)
        if not (running and _null_finish_reason(error))
    ]
    assert not problems, f"{schema} (OpenAPI {SHAPES['version']}):\n" + "\n".join(problems)


def test_the_schemas_are_the_documents() -> None:
    assert SHAPES["version"] == "2.3.0"
    message = SHAPES["$defs"]["ChatCompletionResponseMessage"]
    assert message["required"] == ["role", "content", "refusal"]


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client(timeout=120) as client:
        yield client


def _stream(http: httpx.Client, path: str, body: dict) -> list[dict]:
    with http.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        return json_events(response)


@pytest.mark.parametrize(
    "extra",
    [{}, {"logprobs": True, "top_logprobs": 2}, {"n": 2, "seed": 1}],
    ids=["plain", "logprobs", "n2"],
)
def test_chat_completion(http: httpx.Client, extra: dict) -> None:
    body = {"model": "x", "messages": QUESTION, "max_tokens": 4, **extra}
    answer = http.post("/v1/chat/completions", json=body).json()
    check("CreateChatCompletionResponse", answer)
    message = answer["choices"][0]["message"]
    assert message["refusal"] is None
    assert "tool_calls" not in message and "function_call" not in message
    if extra.get("logprobs"):
        assert answer["choices"][0]["logprobs"]["refusal"] is None
        assert len(answer["choices"][0]["logprobs"]["content"]) >= 1


def test_chat_completion_with_a_tool_call(http: httpx.Client) -> None:
    body = {
        "model": "x",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": TOOLS,
        "tool_choice": "required",
        "max_tokens": 40,
    }
    answer = http.post("/v1/chat/completions", json=body).json()
    check("CreateChatCompletionResponse", answer)
    assert answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("extra", [{}, {"logprobs": True, "top_logprobs": 1}])
def test_chat_completion_chunks(http: httpx.Client, extra: dict) -> None:
    usage = {"stream_options": {"include_usage": True}}
    body = {"model": "x", "messages": QUESTION, "max_tokens": 4, **usage, **extra}
    chunks = _stream(http, "/v1/chat/completions", body)
    assert len(chunks) >= 3
    for chunk in chunks:
        check("CreateChatCompletionStreamResponse", chunk)


@pytest.mark.parametrize("extra", [{}, {"logprobs": 2}, {"echo": True, "max_tokens": 2}])
def test_text_completion_and_its_chunks(http: httpx.Client, extra: dict) -> None:
    body = {"model": "x", "prompt": "The sky is", "max_tokens": 4, **extra}
    check("CreateCompletionResponse", http.post("/v1/completions", json=body).json())
    chunks = _stream(http, "/v1/completions", body)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    for chunk in chunks[:-1]:
        check("CreateCompletionResponse", chunk, running=True)
    check("CreateCompletionResponse", chunks[-1])


def test_model_and_model_list(server: ServerProcess, http: httpx.Client) -> None:
    listed = http.get("/v1/models").json()
    check("ListModelsResponse", listed)
    model_id = listed["data"][0]["id"]
    card = http.get(f"/v1/models/{model_id}")
    assert card.status_code == 200
    check("Model", card.json())
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
    assert sdk.models.retrieve(model_id).id == model_id
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")


def test_embedding_list(http: httpx.Client) -> None:
    answer = http.post("/v1/embeddings", json={"input": ["a cat", "a dog"]})
    assert answer.status_code == 200, answer.text
    check("CreateEmbeddingResponse", answer.json())


def test_request_errors_are_the_sdks_bad_request_error(server: ServerProcess) -> None:
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.completions.create(model="x", prompt="Hi", max_tokens=1, temperature=99)
    assert refused.value.status_code == 400
    assert refused.value.body["param"] == "temperature"
