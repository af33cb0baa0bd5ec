"""Streaming OpenAI clients for the benchmarks: one stream, timed, and many at once."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class StreamResult:
    tokens: int
    seconds: float
    ttft: float
    error: str | None = None


@dataclass
class LoadResult:
    streams: list[StreamResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> list[StreamResult]:
        return [s for s in self.streams if s.error is None]

    @property
    def tokens_per_second(self) -> float:
        return sum(s.tokens for s in self.ok) / self.seconds if self.seconds else 0.0

    def ttft_percentile(self, fraction: float) -> float:
        values = sorted(s.ttft for s in self.ok)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(fraction * len(values)))]

    @property
    def ttft_p50(self) -> float:
        return statistics.median(s.ttft for s in self.ok) if self.ok else float("nan")


async def stream_chat(
    client: httpx.AsyncClient, url: str, body: dict, headers: dict[str, str]
) -> StreamResult:
    """One streamed chat completion; tokens are taken from the usage chunk when sent."""
    started = time.perf_counter()
    first = 0.0
    chunks = 0
    usage_tokens = None
    try:
        async with client.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers=headers
        ) as response:
            if response.status_code != 200:
                await response.aread()
                return StreamResult(0, 0.0, 0.0, f"HTTP {response.status_code}")
            async for line in response.aiter_lines():
                if not line.startswith("data:") or line.endswith("[DONE]"):
                    continue
                payload = json.loads(line[5:])
                if payload.get("usage"):
                    usage_tokens = payload["usage"].get("completion_tokens")
                for choice in payload.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        chunks += 1
                        if not first:
                            first = time.perf_counter() - started
    except httpx.HTTPError as exc:
        return StreamResult(0, 0.0, 0.0, f"{type(exc).__name__}: {exc}")
    return StreamResult(usage_tokens or chunks, time.perf_counter() - started, first)


def chat_body(model: str, max_tokens: int, story: int = 0) -> dict:
    """A greedy streamed chat; ``story`` numbers its question, so that a benchmark can send each
    measurement a new conversation that no server answers from a cache of an earlier one."""
    question = f"Write a long story, number {story}, about a dragon and a baker."
    return {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def concurrent_streams(
    url: str, body: dict, headers: dict[str, str], count: int
) -> LoadResult:
    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        streams = await asyncio.gather(
            *(stream_chat(client, url, body, headers) for _ in range(count))
        )
        return LoadResult(list(streams), time.perf_counter() - started)
