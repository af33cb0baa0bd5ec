"""Tools and tool history in prompts: the model's own template, or Serval's text for one
that knows no tools."""

from __future__ import annotations

import asyncio
import re

from backends.base import SpecialTokens
from common.chat.prompt import ChatPrompt, render_prompt
from common.chat.templates import ChatTemplate, load_named_template
from common.chat.tools.formats import FORMATS
from tests.support.chats import tool_round

SPECIAL = SpecialTokens(1, (2,), None, "<s>", "</s>", None, None, False)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "paint",
            "parameters": {"type": "object", "properties": {"color": {"type": "string"}}},
        },
    }
]
HISTORY = tool_round(
    "Paint it red, then green.",
    [("call_1", "paint", '{"color": "red"}'), ("call_2", "paint", '{"color": "green"}')],
    [("call_2", "green done"), ("call_1", "red done")],
)
# A template with tools of its own, in the style of Qwen 2.5's.
NATIVE = ChatTemplate.from_string(
    "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}\n{% endif %}"
    "{% for m in messages %}{{ m.role }}:"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}CALL {{ c.function.name }} "
    "{{ c.function.arguments.color }};{% endfor %}{% else %}{{ m.content }}{% endif %}\n"
    "{% endfor %}",
    name="native",
)


def render(template: ChatTemplate, chat: ChatPrompt) -> str:
    return asyncio.run(render_prompt(template, chat, SPECIAL, 2.0))


def test_native_template_gets_tools_and_argument_objects_in_call_order() -> None:
    prompt = render(NATIVE, ChatPrompt(messages=HISTORY, tools=TOOLS))
    assert prompt.startswith("TOOLS:paint;")
    assert "assistant:CALL paint red;CALL paint green;" in prompt
    assert prompt.index("red done") < prompt.index("green done")


def test_plain_template_gets_tools_and_calls_written_out() -> None:
    chatml = load_named_template("chatml")
    prompt = render(
        chatml, ChatPrompt(messages=HISTORY, tools=TOOLS, tool_format=FORMATS["hermes"])
    )
    system, rest = prompt.split("<|im_end|>", 1)
    assert system.startswith("<|im_start|>system\n") and '"name": "paint"' in system
    assert "<tool_call>" in system  # how to call, in the model's format
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "paint", "arguments": {"color": "red"}}\n'
        "</tool_call>\n<tool_call>" in rest
    )
    results = rest.split("<|im_start|>user\n")[-1]
    assert results.index("<tool_response>\nred done") < results.index("green done")


def test_plain_template_in_another_format() -> None:
    chatml = load_named_template("chatml")
    prompt = render(
        chatml, ChatPrompt(messages=HISTORY, tools=TOOLS, tool_format=FORMATS["mistral"])
    )
    assert (
        '[TOOL_CALLS][{"name": "paint", "arguments": {"color": "red"}}, {"name": "paint"' in prompt
    )


def test_plain_template_without_tools_is_untouched() -> None:
    chatml = load_named_template("chatml")
    messages = [{"role": "user", "content": "Hi"}]
    assert (
        render(chatml, ChatPrompt(messages=messages))
        == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_mistral_templates_get_nine_character_ids() -> None:
    strict = ChatTemplate.from_string(
        "{% for m in messages %}{% for c in m.tool_calls or [] %}"
        "{% if c.id|length != 9 %}{{ raise_exception('ids must have 9 characters') }}{% endif %}"
        "[CALL {{ c.id }}]{% endfor %}{% if m.tool_call_id %}[RESULT {{ m.tool_call_id }}]"
        "{% endif %}{% endfor %}{{ tools|length }}",
        name="mistral-like",
    )
    history = [
        {**m, "tool_calls": [{**c, "id": f"call_{i:024x}"} for i, c in enumerate(m["tool_calls"])]}
        if m.get("tool_calls")
        else m
        for m in HISTORY
    ]
    history[2] = {**history[2], "tool_call_id": "call_" + "0" * 23 + "1"}
    history[3] = {**history[3], "tool_call_id": "call_" + "0" * 24}
    prompt = render(
        strict, ChatPrompt(messages=history, tools=TOOLS, tool_format=FORMATS["mistral"])
    )
    calls = re.findall(r"\[CALL (\w+)\]", prompt)
    assert len(calls) == 2 and all(len(c) == 9 for c in calls)
    assert re.findall(r"\[RESULT (\w+)\]", prompt) == calls  # results follow their calls
