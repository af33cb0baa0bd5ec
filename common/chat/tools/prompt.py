"""Tools for models whose chat template knows nothing of tools.

Such a template (the default model's ChatML, for one) ignores ``tools`` and fails on an
assistant message that has calls but no text. Serval then does the template's part: the tools
and how to call them go into the system message, earlier calls become text in the model's
format, and tool results become user turns wrapped in ``<tool_response>`` tags (a user turn
keeps strict role-alternating templates happy).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from common.chat.tools.formats import Call, ToolFormat

RESULT_OPEN = "<tool_response>"
RESULT_CLOSE = "</tool_response>"


def tool_instructions(fmt: ToolFormat, tools: list[dict[str, Any]]) -> str:
    listing = "\n".join(
        json.dumps(tool.get("function", tool), ensure_ascii=False) for tool in tools
    )
    example = fmt.write_calls([("function_name", {"argument": "value"})])
    return (
        "You can call these functions (with JSON schemas of their arguments):\n"
        f"<tools>\n{listing}\n</tools>\n"
        f"To call one, answer with the call alone, like this:\n{example}\n"
        f"Results come back in {RESULT_OPEN} tags."
    )


def _calls(message: dict[str, Any]) -> list[Call]:
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        calls.append((function.get("name", ""), function.get("arguments", {})))
    return calls


def _with_instructions(messages: list[dict[str, Any]], instructions: str) -> list[dict[str, Any]]:
    if messages and messages[0].get("role") in ("system", "developer"):
        first = messages[0]
        text = first.get("content") or ""
        content = f"{text}\n\n{instructions}" if text else instructions
        return [{**first, "content": content}, *messages[1:]]
    return [{"role": "system", "content": instructions}, *messages]


def plain_tool_messages(
    messages: list[dict[str, Any]], fmt: ToolFormat, tools: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """``messages`` as a template without tool support can render them."""
    result: list[dict[str, Any]] = []
    results_turn: dict[str, Any] | None = None
    for message in messages:
        role = message.get("role")
        if role in ("tool", "function"):
            text = f"{RESULT_OPEN}\n{message.get('content') or ''}\n{RESULT_CLOSE}"
            if results_turn is None:
                results_turn = {"role": "user", "content": text}
                result.append(results_turn)
            else:
                results_turn["content"] += "\n" + text
            continue
        results_turn = None
        if role == "assistant" and message.get("tool_calls"):
            text = message.get("content") or ""
            calls = fmt.write_calls(_calls(message))
            message = {key: value for key, value in message.items() if key != "tool_calls"}
            message["content"] = f"{text}\n{calls}" if text else calls
        result.append(message)
    return _with_instructions(result, tool_instructions(fmt, tools)) if tools else result


def _short_id(call_id: Any) -> Any:
    if isinstance(call_id, str) and len(call_id) == 9 and call_id.isalnum():
        return call_id
    return hashlib.sha256(str(call_id).encode()).hexdigest()[:9]


def shorten_call_ids(messages: list[dict[str, Any]]) -> None:
    """Call ids as Mistral's templates demand (9 letters or digits), the same in calls and in
    results; ``call_…`` ids are hashed down. Changes ``messages`` in place."""
    for message in messages:
        for call in message.get("tool_calls") or []:
            call["id"] = _short_id(call.get("id"))
        if message.get("tool_call_id") is not None:
            message["tool_call_id"] = _short_id(message["tool_call_id"])
