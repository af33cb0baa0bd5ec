"""Jobs end when the client goes or aborts, and tokens round-trip, the same on every engine; the
Kobold routes as Kobold Lite and SillyTavern use them."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conformance.conftest import CONTEXT, Served
from tests.support.kobold import check, generate, stream_events, token_ids
from tests.support.metrics import wait_until_idle
from tests.support.server import API_KEY
from tests.support.sse import data_events

PROMPT = "Once upon a time"
# Enough tokens that a job is still running while a test acts on it (it is cut short).
LONG = CONTEXT - 32


def test_disconnect_mid_stream_cancels_the_job(served: Served) -> None:
    url = served.server.url
    body = {"prompt": PROMPT, "max_tokens": LONG, "min_tokens": LONG, "stream": True}
    with httpx.stream(
        "POST",
        f"{url}/v1/completions",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json=body,
        timeout=60,
    ) as response:
        events = data_events(response)
        for _ in range(3):
            next(events)
    assert wait_until_idle(url, timeout=10.0)
    with served.server.client() as client:
        assert client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).is_success


def test_disconnect_before_the_answer_cancels_a_blocking_request(served: Served) -> None:
    body = {"prompt": PROMPT, "max_tokens": LONG, "min_tokens": LONG}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{served.server.url}/v1/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json=body,
            timeout=1.0,
        )
    assert wait_until_idle(served.server.url, timeout=10.0)


def test_encode_decode_round_trip(served: Served) -> None:
    with served.server.client() as client:

        def encode(text: Any, **options: Any) -> list[int]:
            response = client.post("/v1/token/encode", json={"text": text, **options})
            assert response.status_code == 200, response.text
            data = response.json()
            assert data["length"] == len(data["tokens"])
            return data["tokens"]

        def decode(tokens: list[int]) -> str:
            return client.post("/v1/token/decode", json={"tokens": tokens}).json()["text"]

        text = "Serval says héllo 👋 <|im_start|>"
        tokens = encode(text, add_bos_token=False)
        assert decode(tokens) == text
        assert len(encode("<|im_start|>", add_bos_token=False)) == 1  # special tokens are parsed
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        assert decode(encode(messages)).endswith("What is the capital of France?<|im_end|>\n")
        assert client.post("/v1/token/decode", json={"tokens": [10**9]}).status_code == 400


def test_kobold_blocking_latest_and_streamed_generations_agree(served: Served) -> None:
    body = {"prompt": PROMPT, "max_length": 6, "temperature": 0, "use_default_badwordsids": True}
    with served.server.client() as client:
        result = generate(client, body)
        assert generate(client, body, "/api/latest/generate") == result
        with client.stream("POST", "/api/extra/generate/stream", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = list(stream_events(response))
        prompt_tokens = len(token_ids(client, PROMPT, special=True))
    assert result["text"].strip()
    assert result["finish_reason"] == "length"
    assert (result["prompt_tokens"], result["completion_tokens"]) == (prompt_tokens, 6)
    assert "".join(event["token"] for event in events) == result["text"]
    assert [event["finish_reason"] for event in events[:-1]] == [None] * (len(events) - 1)
    assert events[-1]["finish_reason"] == "length"


def test_kobold_abort_ends_a_running_stream_from_a_second_client(served: Served) -> None:
    genkey = f"conformance-stream-{served.backend}"
    body = {"prompt": PROMPT, "max_length": LONG, "temperature": 0, "genkey": genkey}
    with served.server.client() as streamer, served.server.client() as other:
        with streamer.stream("POST", "/api/extra/generate/stream", json=body) as response:
            events = stream_events(response)
            received = ""
            for event in events:
                received += event["token"]
                if len(received) > 10:
                    break
            partial = check(other, genkey)
            started = time.monotonic()
            aborted = other.post("/api/extra/abort", json={"genkey": genkey})
            rest = list(events)
        stopped_in = time.monotonic() - started
        after = other.get("/api/extra/generate/check", params={"genkey": genkey})
        again = other.post("/api/extra/abort", json={"genkey": genkey})
    assert partial.startswith(received)
    assert aborted.json() == {"success": True, "done": True}
    assert rest[-1] == {"token": "", "finish_reason": "abort"}
    streamed = received + "".join(event["token"] for event in rest)
    assert after.json() == {"results": [{"text": streamed}]}
    assert stopped_in < 10
    assert again.json()["success"] is False
    assert wait_until_idle(served.server.url, timeout=10.0)


def test_kobold_abort_returns_a_blocking_generation_with_its_text_so_far(served: Served) -> None:
    genkey = f"conformance-blocking-{served.backend}"
    body = {"prompt": PROMPT, "max_length": LONG, "temperature": 0, "genkey": genkey}

    def blocking() -> httpx.Response:
        with served.server.client() as client:
            return client.post("/api/v1/generate", json=body)

    with ThreadPoolExecutor(1) as pool, served.server.client() as other:
        future = pool.submit(blocking)
        partial, deadline = "", time.monotonic() + 60
        while not partial and time.monotonic() < deadline:
            time.sleep(0.05)
            partial = check(other, genkey)
        aborted = other.post("/api/extra/abort", json={"genkey": genkey})
        response = future.result(timeout=30)
    assert partial
    assert aborted.json()["success"] is True
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert result["finish_reason"] == "abort"
    assert result["text"].startswith(partial)
    assert 0 < result["completion_tokens"] < LONG
