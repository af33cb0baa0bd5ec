"""Tool calling on the real default model through the official openai SDK.

SmolLM2-135M-Instruct was never trained on tools and its ChatML template ignores them, so
these calls come from Serval alone: the tools written into the prompt in Hermes format, the
grammar that holds a forced call to its schema, and the parser that reads it back.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
from typing import Literal

import httpx
import jsonschema
import openai
import pydantic
import pytest

from tests.support.chats import tool_round
from tests.support.server import API_KEY, ServerProcess

SET_LEVEL = {
    "type": "function",
    "function": {
        "name": "set_level",
        "parameters": {
            "type": "object",
            "properties": {"level": {"type": "integer", "minimum": 1, "maximum": 5}},
            "required": ["level"],
            "additionalProperties": False,
        },
    },
}
PAINT = {
    "type": "function",
    "function": {
        "name": "paint",
        "parameters": {
            "type": "object",
            "properties": {
                "color": {"enum": ["red", "green", "blue"]},
                "coats": {"type": "integer", "minimum": 1, "maximum": 3},
            },
            "required": ["color", "coats"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [SET_LEVEL, PAINT]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "Louder, and paint the wall blue."}]
CALL_ID = re.compile(r"call_[0-9a-f]{24}")


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)


def _check_calls(message, names: set[str]) -> None:
    assert message.tool_calls, message
    for call in message.tool_calls:
        assert CALL_ID.fullmatch(call.id)
        assert call.type == "function" and call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def _run_seeds(client: openai.OpenAI, seeds: range, choice_of) -> list:
    """One answer per seed, sampled at temperature 1, 16 at a time (the engine's batch)."""

    def run(seed: int):
        return client.chat.completions.create(
            model="x",
            messages=ASK,
            tools=TOOLS,
            tool_choice=choice_of(seed),
            parallel_tool_calls=False,
            max_tokens=40,
            temperature=1.0,
            seed=seed,
        )

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return list(pool.map(run, seeds))


def _check_runs(answers: list, names_of) -> None:
    seen = set()
    for seed, answer in enumerate(answers):
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls", (seed, choice)
        assert choice.message.content is None and len(choice.message.tool_calls) == 1
        _check_calls(choice.message, names_of(seed))
        seen.add(choice.message.tool_calls[0].function.arguments)
    assert len(seen) > 3  # sampled, not one answer repeated


def test_required_calls_always_validate(client: openai.OpenAI) -> None:
    """A batch of 16 seeded runs (and 16 more below): every call parses and fits its schema."""
    answers = _run_seeds(client, range(16), lambda seed: "required")
    _check_runs(answers, lambda seed: set(SCHEMAS))


def test_named_calls_always_validate(client: openai.OpenAI) -> None:
    names = [t["function"]["name"] for t in TOOLS]
    answers = _run_seeds(
        client,
        range(16, 32),
        lambda seed: {"type": "function", "function": {"name": names[seed % 2]}},
    )
    _check_runs(answers, lambda index: {names[index % 2]})


def test_streamed_calls_assemble_into_the_whole_answer(client: openai.OpenAI) -> None:
    request = dict(
        model="x",
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "paint"}},
        max_tokens=48,
        temperature=1.0,
        seed=7,
    )
    whole = client.chat.completions.create(**request).choices[0]
    with client.chat.completions.stream(**request) as stream:
        chunks = [event.chunk for event in stream if event.type == "chunk"]
        streamed = stream.get_final_completion().choices[0]
    assert streamed.finish_reason == whole.finish_reason == "tool_calls"
    got = [(c.function.name, c.function.arguments) for c in streamed.message.tool_calls]
    assert got == [(c.function.name, c.function.arguments) for c in whole.message.tool_calls]
    _check_calls(streamed.message, {"paint"})
    pieces = [d for c in chunks for d in (c.choices[0].delta.tool_calls or []) if c.choices]
    assert pieces[0].id and pieces[0].function.name == "paint"  # the name comes first
    assert all(p.id is None and p.function.name is None for p in pieces[1:])
    assert len([p for p in pieces if p.function.arguments]) > 3  # arguments as they come


def test_parallel_calls(client: openai.OpenAI) -> None:
    """Several calls in one answer, each with its own id; every finished one validates."""
    answer = client.chat.completions.create(
        model="x", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=64, temperature=0
    )
    choice = answer.choices[0]
    calls = choice.message.tool_calls
    assert len(calls) >= 2 and len({c.id for c in calls}) == len(calls)
    finished = calls if choice.finish_reason == "tool_calls" else calls[:-1]
    for call in finished:
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_tool_results_go_back_in_call_order(client: openai.OpenAI, server: ServerProcess) -> None:
    history = tool_round(
        "Louder, and paint it red.",
        [
            ("call_a", "set_level", '{"level": 4}'),
            ("call_b", "paint", '{"color": "red", "coats": 1}'),
        ],
        [("call_b", "painted"), ("call_a", "level is 4")],
    )
    answer = client.chat.completions.create(
        model="x", messages=history, tools=TOOLS, max_tokens=8, temperature=0
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        ids = http.post("/v1/token/encode", json={"text": history}).json()["tokens"]
        prompt = http.post("/v1/token/decode", json={"tokens": ids}).json()["text"]
    assert '{"name": "set_level", "arguments": {"level": 4}}' in prompt
    assert prompt.index("level is 4") < prompt.index("painted")


def test_legacy_functions_get_function_call(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="x",
        messages=ASK,
        functions=[t["function"] for t in TOOLS],
        function_call={"name": "set_level"},
        max_tokens=48,
        temperature=0,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None
    assert choice.message.function_call.name == "set_level"
    jsonschema.validate(json.loads(choice.message.function_call.arguments), SCHEMAS["set_level"])


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "functions": [SET_LEVEL["function"]]}, "functions"),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "bad",
                            "parameters": {
                                "type": "object",
                                "properties": {"x": {"type": "string", "pattern": "(("}},
                            },
                        },
                    }
                ],
                "tool_choice": "required",
            },
            None,
        ),
    ],
)
def test_bad_tool_requests_are_400(client: openai.OpenAI, extra: dict, param: str | None) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="x", messages=ASK, max_tokens=4, **extra)
    if param:
        assert caught.value.body["param"] == param


class Verdict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    louder: bool
    color: Literal["red", "green", "blue"]


class SetLevel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    level: int = pydantic.Field(ge=1, le=5)


def test_sdk_parse_with_a_response_format_and_strict_tools(client: openai.OpenAI) -> None:
    """The SDK's parse(): every answer is a valid Verdict or a valid strict call."""

    def run(seed: int):
        return client.chat.completions.parse(
            model="x",
            messages=ASK,
            response_format=Verdict,
            tools=[openai.pydantic_function_tool(SetLevel)],
            parallel_tool_calls=False,
            max_tokens=40,
            temperature=1.0,
            seed=seed,
        ).choices[0]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        choices = list(pool.map(run, range(8)))
    for choice in choices:
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            assert isinstance(choice.message.tool_calls[0].function.parsed_arguments, SetLevel)
        else:
            assert isinstance(choice.message.parsed, Verdict)
