"""Chat histories in OpenAI's wire format, for tests that send or render them."""

from __future__ import annotations

from typing import Any


def tool_round(
    ask: str, calls: list[tuple[str, str, str]], results: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """A user turn, the assistant's calls ``(id, function name, arguments as JSON)``, then the
    tool results ``(call id, content)`` in the order given."""
    return [
        {"role": "user", "content": ask},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}
                for id_, name, arguments in calls
            ],
        },
        *({"role": "tool", "tool_call_id": id_, "content": content} for id_, content in results),
    ]
