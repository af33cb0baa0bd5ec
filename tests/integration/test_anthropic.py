"""Anthropic's Messages API through the official ``anthropic`` SDK: messages, streams, a tool
round trip, token counts, stop sequences, errors in Anthropic's shape, and Claude Code's body."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from tests.support.server import API_KEY, ROOT, ServerProcess

GREEDY = {"temperature": 0}  # the SDK has no temperature argument; Serval takes one
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def sdk(server: ServerProcess, **auth: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=server.url, max_retries=0, timeout=120, **(auth or {"api_key": API_KEY})
    )


def _text(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def test_create_answers_a_message(server: ServerProcess) -> None:
    answer = sdk(server).messages.create(
        model="serval", max_tokens=8, messages=QUESTION, system="Answer briefly.", extra_body=GREEDY
    )
    assert answer.id.startswith("msg_") and answer.type == "message"
    assert answer.role == "assistant" and answer.content[0].type == "text"
    assert _text(answer).strip()
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert answer.usage.input_tokens > 5 and 0 < answer.usage.output_tokens <= 8


def test_stream_sends_the_event_sequence_and_the_same_answer(server: ServerProcess) -> None:
    client = sdk(server)
    whole = client.messages.create(
        model="serval", max_tokens=8, messages=QUESTION, extra_body=GREEDY
    )
    with client.messages.stream(
        model="serval", max_tokens=8, messages=QUESTION, extra_body=GREEDY
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    raw = [k for k in kinds if k not in ("text", "content_block", "thinking", "input_json")]
    assert raw[:2] == ["message_start", "content_block_start"]
    assert raw[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "content_block_delta" in raw
    assert _text(final) == _text(whole)
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens


@pytest.mark.timeout(300)  # two generations with a tool grammar: slow on a busy 2-core machine
def test_tool_round_trip(server: ServerProcess) -> None:
    client = sdk(server)
    messages: list = [{"role": "user", "content": "What is the weather in Paris?"}]
    offer: dict = {"model": "serval", "tools": [WEATHER], "extra_body": GREEDY}
    with client.messages.stream(
        max_tokens=40, messages=messages, tool_choice={"type": "any"}, **offer
    ) as stream:
        kinds = [event.type for event in stream]
        called = stream.get_final_message()
    assert "input_json" in kinds  # the arguments came as input_json_delta events
    assert called.stop_reason == "tool_use"
    use = next(block for block in called.content if block.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input["city"], str)
    messages += [
        {"role": "assistant", "content": called.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}],
        },
    ]
    answer = client.messages.create(
        max_tokens=4, messages=messages, tool_choice={"type": "none"}, **offer
    )
    assert answer.stop_reason in ("end_turn", "max_tokens") and _text(answer).strip()


def test_count_tokens_is_the_input_the_answer_reports(server: ServerProcess) -> None:
    client = sdk(server)
    request = {"messages": QUESTION, "system": [{"type": "text", "text": "Be brief."}]}
    counted = client.messages.count_tokens(model="serval", tools=[WEATHER], **request)
    answer = client.messages.create(model="serval", max_tokens=1, tools=[WEATHER], **request)
    assert counted.input_tokens == answer.usage.input_tokens
    assert (
        client.messages.count_tokens(model="serval", **request).input_tokens < counted.input_tokens
    )


def test_stop_sequences_end_the_answer_and_are_named(server: ServerProcess) -> None:
    client = sdk(server)
    ask = {"model": "serval", "max_tokens": 10, "messages": QUESTION, "extra_body": GREEDY}
    text = _text(client.messages.create(**ask))
    words = text.split()
    assert len(words) >= 3, text
    stop = words[2]
    answer = client.messages.create(**ask, stop_sequences=[stop])
    assert answer.stop_reason == "stop_sequence" and answer.stop_sequence == stop
    assert _text(answer).rstrip() == text[: text.index(stop)].rstrip()


def test_errors_are_in_anthropic_shape_and_raise_the_sdk_exceptions(server: ServerProcess) -> None:
    def error(response: httpx.Response, status: int, kind: str) -> str:
        assert response.status_code == status, response.text
        body = response.json()
        assert body["type"] == "error" and body["error"]["type"] == kind
        return body["error"]["message"]

    url = f"{server.url}/v1/messages"
    key = {"x-api-key": API_KEY}
    error(httpx.post(url, json={"max_tokens": 4}, headers=key), 400, "invalid_request_error")
    error(httpx.post(url, content=b"{not json", headers=key), 400, "invalid_request_error")
    error(
        httpx.post(url, json={"max_tokens": 4, "messages": QUESTION}), 401, "authentication_error"
    )
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    body = {"max_tokens": 4, "messages": [{"role": "user", "content": [image]}]}
    assert "does not take images" in error(
        httpx.post(url, json=body, headers=key), 400, "invalid_request_error"
    )
    with pytest.raises(anthropic.AuthenticationError):
        sdk(server, api_key="not-a-key").messages.create(
            model="serval", max_tokens=4, messages=QUESTION
        )
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk(server).messages.create(model="serval", max_tokens=0, messages=QUESTION)
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_x_api_key_and_bearer_both_authenticate(server: ServerProcess) -> None:
    for auth in ({"api_key": API_KEY}, {"auth_token": API_KEY}):  # x-api-key, then Bearer
        counted = sdk(server, **auth).messages.count_tokens(model="serval", messages=QUESTION)
        assert counted.input_tokens > 0
    # anthropic-version is accepted, not required
    response = httpx.post(
        f"{server.url}/v1/messages/count_tokens",
        json={"messages": QUESTION},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 200 and response.json()["input_tokens"] > 0


@pytest.mark.timeout(300)  # a prompt of ~1k tokens: its prefill is slow on a busy 2-core machine
def test_claude_code_request_is_answered_as_a_stream(server: ServerProcess) -> None:
    """Claude Code's body after a tool call: system blocks with cache_control, thinking, tools,
    metadata, ``?beta=true`` (max_tokens made small for the test)."""
    recorded = json.loads(
        (ROOT / "tests/fixtures/clients/claude_code_messages.json").read_text(encoding="utf-8")
    )
    body = {**recorded["body"], "max_tokens": 4}
    headers = {**recorded["headers"], "Authorization": f"Bearer {API_KEY}"}
    events: list[tuple[str, dict]] = []
    with httpx.stream(
        "POST", f"{server.url}/v1/messages?beta=true", json=body, headers=headers, timeout=120
    ) as response:
        assert response.status_code == 200, response.read()
        name = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                assert data["type"] == name
                events.append((name, data))
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert events[0][1]["message"]["usage"]["input_tokens"] > 100
    delta = next(data for name, data in events if name == "message_delta")
    assert delta["delta"]["stop_reason"] in ("end_turn", "max_tokens", "tool_use")
