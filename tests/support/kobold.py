"""Talking to the Kobold routes in tests, as Kobold Lite and SillyTavern do."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx

# Kobold Lite's default sampler_order, and the samplers Serval runs for it, in that order.
LITE_SAMPLER_ORDER = [6, 0, 1, 3, 4, 2, 5]
LITE_SAMPLERS = ("penalties", "top_k", "top_a", "tfs", "typical", "top_p", "temperature")

# The routes that read a prompt, as (method, path, smallest body).
PROMPT_ROUTES = [
    ("POST", "/api/v1/generate", {"prompt": "Hi"}),
    ("POST", "/api/extra/generate/stream", {"prompt": "Hi"}),
    ("POST", "/api/extra/tokencount", {"prompt": "Hi"}),
]

# How Kobold Lite reads SSE (kobold_api_stream_sse): LF line ends, "event:" before "data:".
LITE_EVENT = re.compile(r"^event: ([^\r\n]*)\ndata: ([^\r\n]*)\n\n", re.M)


def stream_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    buffer = ""
    for text in response.iter_text():
        buffer += text
        while match := LITE_EVENT.search(buffer):
            assert match.group(1) == "message"
            buffer = buffer[match.end() :]
            yield json.loads(match.group(2))
    assert "data:" not in buffer, f"an event Kobold Lite cannot read: {buffer!r}"


def generate(client: httpx.Client, body: dict[str, Any], path: str = "/api/v1/generate") -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 1
    return results[0]


def check(client: httpx.Client, genkey: str | None) -> str:
    body = {"genkey": genkey} if genkey else None
    response = client.post("/api/extra/generate/check", json=body)
    assert response.status_code == 200, response.text
    return response.json()["results"][0]["text"]


def token_ids(client: httpx.Client, text: str, special: bool) -> list[int]:
    counted = client.post("/api/extra/tokencount", json={"prompt": text, "special": special})
    assert counted.status_code == 200, counted.text
    data = counted.json()
    assert data["value"] == len(data["ids"])
    return data["ids"]
