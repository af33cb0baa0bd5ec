"""The Kobold API against the real server and model, as Kobold Lite and SillyTavern use it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from endpoints.Kobold.router import OPEN_PATHS
from tests.support.kobold import check, generate, stream_events, token_ids
from tests.support.server import ROOT, ServerProcess, assert_refused

FIXTURES = ROOT / "tests" / "fixtures" / "kobold_clients"
PROMPT = "Once upon a time"
# Enough tokens that a generation is still running while a test acts on it.
LONG = {"max_length": 2000, "use_default_badwordsids": True, "temperature": 0}


def test_stop_sequence_stays_in_the_text_unless_trim_stop(server: ServerProcess) -> None:
    base = {"prompt": PROMPT, "max_length": 12, "temperature": 0, "use_default_badwordsids": True}
    with server.client() as client:
        free = generate(client, base)["text"]
        stop = free.split()[2]  # a word from the middle of the greedy text
        kept = generate(client, {**base, "stop_sequence": [stop]})
        trimmed = generate(client, {**base, "stop_sequence": [stop], "trim_stop": True})
    before = free[: free.index(stop)]
    assert kept == {**kept, "text": before + stop, "finish_reason": "stop"}
    assert trimmed["text"] == before and trimmed["finish_reason"] == "stop"


def test_max_context_length_cuts_the_prompt_from_the_left(server: ServerProcess) -> None:
    prompt = " ".join(f"item{i}," for i in range(120))
    memory = "Memory: the sky is green.\n"
    with server.client() as client:
        bos = token_ids(client, "", special=True)  # [BOS] where the model adds one
        ids = token_ids(client, prompt, special=False)
        memory_ids = token_ids(client, memory, special=False)
        assert len(bos) + len(ids) > 200
        cut = generate(
            client, {"prompt": prompt, "max_context_length": 64, "max_length": 8, "temperature": 0}
        )
        with_memory = generate(
            client,
            {
                "prompt": prompt,
                "memory": memory,
                "max_context_length": 64,
                "max_length": 8,
                "temperature": 0,
            },
        )

        def completion(prompt_ids: list[int]) -> str:
            body = {"prompt": prompt_ids, "max_tokens": 8, "temperature": 0}
            response = client.post("/v1/completions", json=body)
            assert response.status_code == 200, response.text
            return response.json()["choices"][0]["text"]

        tail = 56 - len(bos)
        expected = completion(bos + ids[-tail:])
        expected_with_memory = completion(bos + memory_ids + ids[-(tail - len(memory_ids)) :])
    assert cut["prompt_tokens"] == with_memory["prompt_tokens"] == 64 - 8
    assert cut["text"] == expected
    assert with_memory["text"] == expected_with_memory


def test_another_key_cannot_read_or_abort_a_genkey(server: ServerProcess, other_key: str) -> None:
    body = {
        "prompt": PROMPT,
        "max_length": 48,
        "temperature": 0,
        "use_default_badwordsids": True,
        "genkey": "kobold-test-owned",
    }
    with server.client() as owner, server.client(other_key) as stranger:
        with owner.stream("POST", "/api/extra/generate/stream", json=body) as response:
            events = stream_events(response)
            first = next(events)
            seen_by_stranger = [
                check(stranger, "kobold-test-owned"),
                check(stranger, None),
                stranger.get("/api/extra/generate/check").json()["results"][0]["text"],
            ]
            abort_by_genkey = stranger.post(
                "/api/extra/abort", json={"genkey": "kobold-test-owned"}
            )
            abort_all = stranger.post("/api/extra/abort")
            rest = list(events)
        seen_by_owner = check(owner, "kobold-test-owned")
        # The same genkey under another key is another generation.
        stranger_own = generate(stranger, {**body, "max_length": 2})
    assert seen_by_stranger == ["", "", ""]
    assert abort_by_genkey.json()["success"] is False
    assert abort_all.json()["success"] is False
    assert rest[-1]["finish_reason"] == "length"
    assert seen_by_owner == first["token"] + "".join(event["token"] for event in rest)
    assert stranger_own["completion_tokens"] == 2


def test_a_running_genkey_cannot_be_reused(server: ServerProcess) -> None:
    body = {"prompt": PROMPT, **LONG, "genkey": "kobold-test-twice"}
    with (
        server.client() as client,
        server.client() as second,
        client.stream("POST", "/api/extra/generate/stream", json=body) as response,
    ):
        events = stream_events(response)
        next(events)
        duplicate = second.post("/api/v1/generate", json={**body, "max_length": 2})
        aborted = second.post("/api/extra/abort", json={"genkey": "kobold-test-twice"})
        assert list(events)[-1]["finish_reason"] == "abort"
    assert aborted.json()["success"] is True
    assert_refused(duplicate, 409, "genkey")


def test_sampler_order_is_honoured(server: ServerProcess) -> None:
    base = {"prompt": PROMPT, "max_length": 12, "use_default_badwordsids": True}
    # top_p 0.01 before temperature keeps only the top token: greedy. Temperature 5 first
    # flattens the distribution, so top_p keeps many tokens and the seeded draw wanders.
    hot = {**base, "temperature": 5, "top_p": 0.01, "top_k": 0, "sampler_seed": 1234}
    with server.client() as client:
        greedy = generate(client, {**base, "temperature": 0})["text"]
        top_p_first = generate(client, {**hot, "sampler_order": [6, 0, 1, 3, 4, 2, 5]})["text"]
        temperature_first = generate(client, {**hot, "sampler_order": [6, 5, 0, 1, 3, 4, 2]})
    assert top_p_first == greedy
    assert temperature_first["text"] != greedy


def test_n_gives_several_results_and_a_stream_only_one(server: ServerProcess) -> None:
    body = {"prompt": PROMPT, "max_length": 4, "n": 2, "temperature": 1, "sampler_seed": 7}
    with server.client() as client:
        response = client.post("/api/v1/generate", json=body)
        streamed = client.post("/api/extra/generate/stream", json=body)
    assert response.status_code == 200
    assert [r["completion_tokens"] for r in response.json()["results"]] == [4, 4]
    assert_refused(streamed, 400, "n")


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({}, 400, "prompt"),
        ({"prompt": "x", "sampler_order": [0, 9]}, 400, "sampler_order.1"),
        ({"prompt": "x", "n": 1000}, 400, "n"),
        ({"prompt": "x", "max_context_length": 1}, 400, "max_context_length"),
        ({"prompt": "x", "rep_pen": -1}, 400, "rep_pen"),
        ({"prompt": "", "max_length": 2}, 400, "prompt"),
    ],
)
def test_bad_requests_get_a_clear_4xx(
    server: ServerProcess, body: dict, status: int, param: str
) -> None:
    with server.client() as client:
        assert_refused(client.post("/api/v1/generate", json=body), status, param)


def test_info_token_and_soft_prompt_routes(server: ServerProcess) -> None:
    with server.client() as client:
        max_seq_len = client.get("/v1/model").json()["parameters"]["max_seq_len"]
        name = client.get("/v1/model").json()["id"]
        for prefix in ("/api/v1", "/api/latest"):
            assert client.get(f"{prefix}/model").json() == {"result": f"serval/{name}"}
            assert client.get(f"{prefix}/config/max_length").json() == {"value": 200}
            assert client.get(f"{prefix}/config/max_context_length").json() == {
                "value": max_seq_len
            }
            assert client.get(f"{prefix}/info/version").json() == {"result": "1.2.5"}
            assert client.get(f"{prefix}/config/soft_prompts_list").json() == {"values": []}
            assert client.get(f"{prefix}/config/soft_prompt").json() == {"value": ""}
        assert client.get("/api/extra/true_max_context_length").json() == {"value": max_seq_len}
        version = client.get("/api/extra/version").json()
        assert version["result"] == "KoboldCpp" and version["protected"] is True
        assert version["vision"] is False
        assert client.put("/api/v1/config/soft_prompt", json={"value": ""}).json() == {}
        refused = client.put("/api/v1/config/soft_prompt", json={"value": "my-prompt"})
        plain = {"text": "Hello, Kobold!", "add_bos_token": False}
        encoded = client.post("/v1/token/encode", json=plain).json()
        counted = token_ids(client, "Hello, Kobold!", special=False)
    assert refused.status_code == 400
    assert counted == encoded["tokens"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/generate"),
        ("POST", "/api/extra/generate/stream"),
        ("GET", "/api/extra/generate/check"),
        ("POST", "/api/extra/generate/check"),
        ("POST", "/api/extra/abort"),
        ("POST", "/api/extra/tokencount"),
        ("POST", "/api/extra/last_logprobs"),
        ("PUT", "/api/v1/config/soft_prompt"),
    ],
)
def test_generation_and_genkey_routes_need_a_key(
    server: ServerProcess, method: str, path: str
) -> None:
    response = httpx.request(method, f"{server.url}{path}", json={"prompt": "x"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("path", sorted(OPEN_PATHS))
def test_info_routes_answer_without_a_key_as_koboldcpp(server: ServerProcess, path: str) -> None:
    """Kobold Lite connects before it knows it needs a key (it reads ``protected``)."""
    response = httpx.get(f"{server.url}{path}")
    assert response.status_code == 200, response.text
    if path.endswith("/model"):
        assert response.json() == {"result": "serval/protected-model"}  # the name needs the key


def test_max_length_follows_a_sampler_preset(server: ServerProcess) -> None:
    with server.admin() as admin, server.client() as client:
        before = admin.get("/v1/sampling/overrides").json()
        switched = admin.post("/v1/sampling/override/switch", json={"overrides": {"max_tokens": 3}})
        try:
            assert switched.status_code == 200, switched.text
            advertised = client.get("/api/v1/config/max_length").json()
            result = generate(client, {"prompt": PROMPT, "use_default_badwordsids": True})
        finally:
            if before["selected_preset"]:
                admin.post(
                    "/v1/sampling/override/switch", json={"preset": before["selected_preset"]}
                )
            elif before["overrides"]:
                admin.post("/v1/sampling/override/switch", json={"overrides": before["overrides"]})
            else:
                admin.post("/v1/sampling/override/unload")
    assert advertised == {"value": 3}
    assert result["completion_tokens"] == 3


def _fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def test_kobold_lite_default_body_is_accepted_unchanged(server: ServerProcess) -> None:
    fixture = _fixture("kobold_lite_default.json")
    body = fixture["body"]
    with server.client(timeout=120) as client, server.client() as other:
        blocking = generate(client, body)
        # Lite's SSE mode, stopped with its stop button (abort by genkey) after a few tokens.
        with client.stream("POST", "/api/extra/generate/stream", json=body) as response:
            assert response.status_code == 200
            events = stream_events(response)
            received = [next(events)]
            other.post("/api/extra/abort", json={"genkey": body["genkey"]})
            received += list(events)
    assert fixture["routes"] == ["/api/v1/generate", "/api/extra/generate/stream"]
    assert blocking["text"].strip()
    assert blocking["finish_reason"] in ("stop", "length")
    assert "### Instruction:" not in blocking["text"]  # trim_stop: true
    assert received[-1]["finish_reason"] in ("abort", "stop", "length")


@pytest.mark.parametrize("name", ["sillytavern_koboldcpp.json", "sillytavern_kobold_classic.json"])
def test_sillytavern_bodies_are_accepted_unchanged(server: ServerProcess, name: str) -> None:
    fixture = _fixture(name)
    with server.client(timeout=120) as client:
        for route in fixture["routes"]:
            response = client.post(route, json=fixture["body"])
            assert response.status_code == 200, response.text
            data = response.json()
            text = data["choices"][0]["text"] if "choices" in data else data["results"][0]["text"]
            assert text.strip()
