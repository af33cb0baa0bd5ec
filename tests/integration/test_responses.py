"""The OpenAI Responses API (/v1/responses) through the official openai SDK, on the real model:
answers, the event stream, a function-call round trip, structured output, stored responses per
key, and the request Codex CLI sends."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jsonschema
import openai
import pytest

from tests.support.server import API_KEY, ROOT, ServerProcess
from tests.support.sse import named_events

CAPITAL = {
    "model": "x",
    "instructions": "Answer in one short sentence.",
    "input": "What is the capital of France?",
    "max_output_tokens": 32,
    "temperature": 0,
}
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": WEATHER_SCHEMA,
        "strict": True,
    }
]


def sdk(server: ServerProcess, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with sdk(server) as client:
        yield client


@pytest.fixture(scope="module")
def capital(client: openai.OpenAI) -> openai.types.responses.Response:
    """The whole answer to CAPITAL (greedy), made once."""
    return client.responses.create(**CAPITAL)


def test_string_input_and_instructions(capital: openai.types.responses.Response) -> None:
    answer = capital
    assert answer.id.startswith("resp_") and answer.object == "response"
    assert answer.status == "completed" and answer.completed_at
    assert answer.instructions == CAPITAL["instructions"]
    message = answer.output[-1]
    assert message.type == "message" and message.role == "assistant"
    assert "Paris" in answer.output_text
    usage = answer.usage
    assert usage.input_tokens > 10 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_stream_events_in_order_and_the_final_response(
    client: openai.OpenAI, capital: openai.types.responses.Response
) -> None:
    with client.responses.stream(**CAPITAL) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == final.output_text == capital.output_text
    assert final.id == events[0].response.id and final.status == "completed"


@pytest.mark.timeout(300)  # two generations, the first under a grammar: slow on a busy machine
def test_function_call_round_trip_with_previous_response_id(client: openai.OpenAI) -> None:
    asked = client.responses.create(
        model="x",
        input="What is the weather in Paris?",
        tools=WEATHER,
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=40,
        temperature=0,
    )
    calls = [item for item in asked.output if item.type == "function_call"]
    assert len(calls) == 1, asked.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), WEATHER_SCHEMA)
    answered = client.responses.create(
        model="x",
        previous_response_id=asked.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 C"}],
        tools=WEATHER,
        max_output_tokens=8,
        temperature=0,
    )
    assert answered.previous_response_id == asked.id
    assert answered.output_text.strip()
    # the stored conversation (question and call) came before the tool's output
    assert answered.usage.input_tokens > asked.usage.input_tokens


def test_structured_output_follows_the_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    answer = client.responses.create(
        model="x",
        input="Make up a person.",
        text={"format": {"type": "json_schema", "name": "person", "schema": schema}},
        max_output_tokens=40,
        temperature=0,
    )
    assert answer.status == "completed"
    jsonschema.validate(json.loads(answer.output_text), schema)
    assert answer.text.format.type == "json_schema" and answer.text.format.name == "person"


def test_retrieve_then_delete(server: ServerProcess, client: openai.OpenAI) -> None:
    answer = client.responses.create(**{**CAPITAL, "max_output_tokens": 2})
    kept = client.responses.retrieve(answer.id)
    assert kept.id == answer.id and kept.output_text == answer.output_text
    client.responses.delete(answer.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(answer.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(answer.id)
    with server.client() as http:
        metrics = http.get("/metrics").text
    assert 'route="/v1/responses/{response_id}",status="404"' in metrics


def test_another_key_cannot_read_delete_or_continue(
    server: ServerProcess, client: openai.OpenAI, other_key: str
) -> None:
    answer = client.responses.create(**{**CAPITAL, "max_output_tokens": 2})
    with sdk(server, other_key) as stranger:
        with pytest.raises(openai.NotFoundError):
            stranger.responses.retrieve(answer.id)
        with pytest.raises(openai.NotFoundError):
            stranger.responses.delete(answer.id)
        with pytest.raises(openai.BadRequestError) as refused:
            stranger.responses.create(
                model="x", input="And Spain?", previous_response_id=answer.id, max_output_tokens=2
            )
    assert refused.value.body["code"] == "previous_response_not_found"
    assert client.responses.retrieve(answer.id).id == answer.id


def test_store_false_is_not_kept(client: openai.OpenAI) -> None:
    answer = client.responses.create(**{**CAPITAL, "max_output_tokens": 2}, store=False)
    assert answer.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(answer.id)


def test_max_output_tokens_makes_it_incomplete(client: openai.OpenAI) -> None:
    answer = client.responses.create(**{**CAPITAL, "max_output_tokens": 2})
    assert answer.status == "incomplete" and answer.completed_at is None
    assert answer.incomplete_details.reason == "max_output_tokens"
    assert answer.usage.output_tokens == 2
    assert answer.output[-1].status == "incomplete"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"tools": [{"type": "web_search"}, {"type": "local_shell"}]}, "local_shell, web_search"),
        ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, "computer_call_output"),
        ({"tool_choice": {"type": "file_search"}}, "file_search"),
    ],
)
def test_what_serval_does_not_run_is_refused_by_name(
    client: openai.OpenAI, change: dict, named: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(**{**CAPITAL, **change})
    assert named in refused.value.message


def test_codex_request_streams_named_events_and_is_not_stored(server: ServerProcess) -> None:
    recorded = json.loads((ROOT / "tests/fixtures/clients/codex_responses.json").read_text())
    body = {**recorded["body"], "max_output_tokens": 8}  # short, as a test should be
    with (
        server.client(timeout=120) as client,
        client.stream("POST", "/v1/responses", json=body) as response,
    ):
        assert response.status_code == 200, response.read()
        events = named_events(response)
    assert [name for name, _ in events] == [data["type"] for _, data in events]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert events[0][0] == "response.created"
    assert events[-1][0] in ("response.completed", "response.incomplete")
    final = events[-1][1]["response"]
    assert final["store"] is False and final["output"]
    assert {item["type"] for item in final["output"]} <= {"message", "function_call", "reasoning"}
    with server.client() as client:
        assert client.get(f"/v1/responses/{final['id']}").status_code == 404


def test_a_call_to_a_namespace_tool_names_its_namespace(server: ServerProcess) -> None:
    """Codex's ``namespace`` tool (its sub-agent functions): a call comes back with the
    namespace, and Codex's next turn, sending that call back, is answered."""
    recorded = json.loads((ROOT / "tests/fixtures/clients/codex_responses.json").read_text())
    space = next(tool for tool in recorded["body"]["tools"] if tool["type"] == "namespace")
    body = {
        "input": "Close agent 7.",
        "tools": [space],
        "tool_choice": {"type": "function", "name": "close_agent"},
        "max_output_tokens": 40,
        "temperature": 0,
        "store": False,
    }
    with server.client(timeout=120) as client:
        asked = client.post("/v1/responses", json=body)
        assert asked.status_code == 200, asked.text
        calls = [item for item in asked.json()["output"] if item["type"] == "function_call"]
        assert [(call["name"], call["namespace"]) for call in calls] == [
            ("close_agent", "multi_agent_v1")
        ]
        turn = [
            {"type": "message", "role": "user", "content": "Close agent 7."},
            calls[0],
            {"type": "function_call_output", "call_id": calls[0]["call_id"], "output": "closed"},
        ]
        answered = client.post(
            "/v1/responses",
            json={**body, "input": turn, "tool_choice": "none", "max_output_tokens": 4},
        )
    assert answered.status_code == 200, answered.text
