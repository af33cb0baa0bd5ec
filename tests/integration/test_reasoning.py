"""Reasoning split from the answer, on a tiny model whose template opens ``<think>`` itself."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.support.server import API_KEY, ServerProcess
from tests.support.tiny_model import build_tiny_model

THINKING_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% if enable_thinking is defined and not enable_thinking %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{% else %}{{ '<think>\\n' }}{% endif %}{% endif %}"
)
QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]
RENDERED = "<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\n<think>\n"


def _ask(max_tokens: int, **extra: Any) -> dict[str, Any]:
    """The question, answered greedily in up to ``max_tokens``."""
    return dict(model="x", messages=QUESTION, max_tokens=max_tokens, temperature=0, **extra)


@pytest.fixture(scope="module")
def thinking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    models = tmp_path_factory.mktemp("thinking-models")
    folder = build_tiny_model(models / "tiny-think", seed=3)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "chat_template": THINKING_TEMPLATE}))
    process = ServerProcess(
        tmp_path_factory.mktemp("thinking-server"),
        {
            "network": {"api_servers": ["OAI"]},
            "model": {"model_dir": str(models), "model_name": "tiny-think", "reasoning": True},
        },
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(thinking_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{thinking_server.url}/v1", api_key=API_KEY, max_retries=0)


def _streamed(client: openai.OpenAI, **request) -> tuple[str, str, str | None]:
    reasoning = content = ""
    reason = None
    for chunk in client.chat.completions.create(stream=True, **request):
        for choice in chunk.choices:
            delta = choice.delta
            reasoning += getattr(delta, "reasoning_content", None) or ""
            content += delta.content or ""
            reason = choice.finish_reason or reason
    return reasoning, content, reason


def _whole(client: openai.OpenAI, **request) -> tuple[str, str, str | None]:
    choice = client.chat.completions.create(**request).choices[0]
    reasoning = getattr(choice.message, "reasoning_content", None) or ""
    return reasoning, choice.message.content or "", choice.finish_reason


def test_all_reasoning_when_the_block_never_closes(
    client: openai.OpenAI, thinking_server: ServerProcess
) -> None:
    request = _ask(16)
    reasoning, content, reason = _whole(client, **request)
    assert reasoning and content == "" and reason == "length"
    assert _streamed(client, **request) == (reasoning, content, reason)
    raw = openai.OpenAI(
        base_url=f"{thinking_server.url}/v1", api_key=API_KEY, max_retries=0
    ).completions.create(
        model="x",
        prompt=RENDERED,
        max_tokens=16,
        temperature=0,
    )
    assert raw.choices[0].text.strip() == reasoning  # nothing lost, nothing added


def test_budget_closes_the_block_and_the_answer_follows(client: openai.OpenAI) -> None:
    request = _ask(20, extra_body={"reasoning_budget_tokens": 6})
    reasoning, content, reason = _whole(client, **request)
    unlimited, _, _ = _whole(client, **_ask(20))
    assert reasoning and content
    assert len(reasoning) < len(unlimited) and unlimited.startswith(reasoning)
    assert reason == "length"
    assert _streamed(client, **request) == (reasoning, content, reason)
    usage = client.chat.completions.create(**request).usage
    assert usage.completion_tokens == 20  # the end tag counts toward max_tokens


def test_cfg_continues_past_the_budget_end_tag(client: openai.OpenAI) -> None:
    """A negative prompt equal to the prompt as rendered changes nothing at any scale, also in
    the job that answers after the forced end tag: its negative prompt reads the same tokens."""
    budget = {"reasoning_budget_tokens": 6}
    request = dict(model="x", messages=QUESTION, max_tokens=20, temperature=0, extra_body=budget)
    guided = {**budget, "cfg_scale": 3.0, "negative_prompt": RENDERED}
    plain = _whole(client, **request)
    assert plain[1]  # an answer after the end tag
    assert _whole(client, **{**request, "extra_body": guided}) == plain


def test_thinking_off_in_the_template_means_no_reasoning(client: openai.OpenAI) -> None:
    request = _ask(8, extra_body={"enable_thinking": False})
    reasoning, content, _ = _whole(client, **request)
    assert reasoning == "" and content
    assert _streamed(client, **request)[:2] == (reasoning, content)


def test_reasoning_then_a_required_call(client: openai.OpenAI) -> None:
    """The call's grammar starts after the block; the budget closes the block in time."""
    tool = {
        "type": "function",
        "function": {
            "name": "pick",
            "parameters": {
                "type": "object",
                "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
                "required": ["n"],
                "additionalProperties": False,
            },
        },
    }
    request = _ask(
        150,  # this tokenizer spends a token on most characters
        tools=[tool],
        tool_choice="required",
        parallel_tool_calls=False,
        extra_body={"reasoning_budget_tokens": 4},
    )
    choice = client.chat.completions.create(**request).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.reasoning_content
    (call,) = choice.message.tool_calls
    assert call.function.name == "pick" and 1 <= json.loads(call.function.arguments)["n"] <= 9
    with client.chat.completions.stream(**request) as stream:
        streamed = stream.get_final_completion().choices[0]
    assert streamed.message.reasoning_content == choice.message.reasoning_content
    assert streamed.message.tool_calls[0].function.arguments == call.function.arguments


def _reasoning_and_text(items: list) -> tuple[str, str]:
    reasoning = "".join(p.text for i in items if i.type == "reasoning" for p in i.content or [])
    text = "".join(p.text for i in items if i.type == "message" for p in i.content)
    return reasoning, text


def test_responses_answer_with_a_reasoning_item_streamed_alike(client: openai.OpenAI) -> None:
    request = dict(
        model="x",
        input=QUESTION[0]["content"],
        max_output_tokens=20,
        temperature=0,
        extra_body={"reasoning_budget_tokens": 6},
    )
    answer = client.responses.create(**request)
    assert [item.type for item in answer.output] == ["reasoning", "message"]
    reasoning, text = _reasoning_and_text(answer.output)
    assert reasoning and text and answer.status == "incomplete"
    events = list(client.responses.create(stream=True, **request))
    deltas = [e.delta for e in events if e.type == "response.reasoning_text.delta"]
    assert "".join(deltas) == reasoning
    assert _reasoning_and_text(events[-1].response.output) == (reasoning, text)
    off = client.responses.create(**{**request, "reasoning": {"effort": "none"}})
    assert [item.type for item in off.output] == ["message"]
