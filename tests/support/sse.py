"""Reading server-sent events in tests."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx


def data_events(response: httpx.Response) -> Iterator[str]:
    """The ``data:`` payloads of a streamed response, as they arrive."""
    for line in response.iter_lines():
        if line.startswith("data:"):
            yield line[5:].strip()


def json_events(response: httpx.Response) -> list[dict]:
    """Every JSON ``data:`` payload of a streamed response (``[DONE]`` left out)."""
    return [json.loads(data) for data in data_events(response) if data != "[DONE]"]


def named_events(response: httpx.Response) -> list[tuple[str | None, dict]]:
    """Every event of a streamed response as (its ``event:`` name, its JSON data)."""
    events: list[tuple[str | None, dict]] = []
    name: str | None = None
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line[5:].strip())))
            name = None
    return events
