"""Samplers and sampler presets end to end: the real server, the real model, real clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.server import API_KEY, ServerProcess, free_port, run_main
from tests.support.sse import json_events

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
YES_NO = [{"role": "user", "content": "Reply with one word: yes or no. Is the sky blue?"}]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture
def overrides(server: ServerProcess) -> Iterator[httpx.Client]:
    """An admin client for the sampler presets; the presets are cleared afterwards."""
    with server.admin() as admin:
        try:
            yield admin
        finally:
            assert admin.post("/v1/sampling/override/unload").status_code == 200


def complete(http: httpx.Client, prompt: str, **body: object) -> dict:
    response = http.post("/v1/completions", json={"prompt": prompt, **body})
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]


def chat_text(client: openai.OpenAI, messages: list, **options: object) -> str:
    answer = client.chat.completions.create(model="x", messages=messages, **options)  # type: ignore[call-overload]
    return answer.choices[0].message.content or ""


def token_id(http: httpx.Client, text: str) -> int:
    response = http.post("/v1/token/encode", json={"text": text, "add_bos_token": False})
    (token,) = response.json()["tokens"]
    return token


def test_temperature_zero_is_deterministic(client: openai.OpenAI) -> None:
    first = client.completions.create(
        model="x", prompt="Once upon a time", max_tokens=10, temperature=0
    )
    again = client.completions.create(
        model="x", prompt="Once upon a time", max_tokens=10, temperature=0
    )
    assert first.choices[0].text == again.choices[0].text
    assert first.choices[0].text.strip()


def test_the_same_seed_gives_the_same_text(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        answer = client.completions.create(
            model="x", prompt="Once upon a time", max_tokens=12, temperature=1.0, seed=seed
        )
        return answer.choices[0].text

    reference = sample(1234)
    assert sample(1234) == reference
    assert any(sample(seed) != reference for seed in (1, 2, 3))


def test_seeded_choices_differ_but_repeat(http: httpx.Client) -> None:
    body = {"max_tokens": 8, "temperature": 1.0, "seed": 99, "n": 2}
    first = http.post("/v1/completions", json={"prompt": "My favourite food", **body}).json()
    again = http.post("/v1/completions", json={"prompt": "My favourite food", **body}).json()
    texts = [choice["text"] for choice in first["choices"]]
    assert texts == [choice["text"] for choice in again["choices"]]
    assert texts[0] != texts[1]


def test_logit_bias_of_100_forces_a_token(client: openai.OpenAI, http: httpx.Client) -> None:
    banana = token_id(http, " banana")
    answer = client.completions.create(
        model="x",
        prompt="The capital of France is",
        max_tokens=4,
        temperature=1.0,
        logit_bias={str(banana): 100},
    )
    assert answer.choices[0].text == " banana" * 4


def test_banned_tokens_never_appear(http: httpx.Client) -> None:
    plain = complete(http, "The sky is", max_tokens=8, temperature=0, logprobs=0)
    pieces = [p for p in plain["logprobs"]["tokens"] if p.strip()]
    banned = [token_id(http, piece) for piece in pieces]
    again = complete(
        http, "The sky is", max_tokens=8, temperature=0, logprobs=0, banned_tokens=banned
    )
    assert not set(again["logprobs"]["tokens"]) & set(pieces)
    as_csv = complete(
        http,
        "The sky is",
        max_tokens=8,
        temperature=0,
        logprobs=0,
        custom_token_bans=",".join(map(str, banned)),
    )
    assert as_csv["text"] == again["text"]


@pytest.mark.parametrize("banned", ["Paris", "capital of"])
def test_banned_strings_never_appear(client: openai.OpenAI, banned: str) -> None:
    plain = chat_text(client, QUESTION, max_tokens=12, temperature=0)
    assert banned in plain
    answer = chat_text(
        client, QUESTION, max_tokens=12, temperature=0, extra_body={"banned_strings": [banned]}
    )
    assert banned.lower() not in answer.lower()
    # Backtracking only changes what follows the text before the banned string.
    assert answer.startswith(plain[: plain.index(banned)].rstrip())


def test_banned_strings_are_never_streamed(http: httpx.Client) -> None:
    body = {
        "messages": QUESTION,
        "max_tokens": 12,
        "temperature": 0,
        "stream": True,
        "banned_strings": ["Paris", "France"],
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        deltas = [
            event["choices"][0]["delta"].get("content") or ""
            for event in json_events(response)
            if event.get("choices")
        ]
    streamed = "".join(deltas)
    assert streamed.strip()
    assert "paris" not in streamed.lower() and "france" not in streamed.lower()


def test_text_held_for_a_stop_or_banned_string_is_kept_at_eos(client: openai.OpenAI) -> None:
    """The answer ends in "." and then EOS; "." could have started the stop string."""
    plain = chat_text(client, QUESTION, max_tokens=20, temperature=0)
    assert plain.endswith(".")
    assert chat_text(client, QUESTION, max_tokens=20, temperature=0, stop=[". Bye"]) == plain
    held = chat_text(
        client, QUESTION, max_tokens=20, temperature=0, extra_body={"banned_strings": [". Bye"]}
    )
    assert held == plain


def test_min_tokens_holds_back_eos(client: openai.OpenAI) -> None:
    short = client.chat.completions.create(model="x", messages=YES_NO, max_tokens=30, temperature=0)
    assert short.choices[0].finish_reason == "stop"
    assert short.usage.completion_tokens < 6
    held = client.chat.completions.create(
        model="x", messages=YES_NO, max_tokens=30, temperature=0, extra_body={"min_tokens": 8}
    )
    assert held.usage.completion_tokens >= 8


def test_ban_eos_token_runs_to_max_tokens(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="x", messages=YES_NO, max_tokens=10, temperature=0, extra_body={"ignore_eos": True}
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 10


REPEATING_PROMPT = "Colours: red, green, blue, red, green, blue, red, green, blue, red,"
"""A cycle the model continues greedily in every dtype (fp32 on AVX2, bf16 on AVX512-BF16)."""


def test_dry_stops_a_repeating_phrase(http: httpx.Client) -> None:
    plain = complete(http, REPEATING_PROMPT, max_tokens=12, temperature=0)["text"]
    assert "green, blue, red, green" in plain  # without DRY the model repeats the cycle
    dry = complete(http, REPEATING_PROMPT, max_tokens=12, temperature=0, dry_multiplier=2.0)
    assert "green, blue, red, green" not in dry["text"]


def test_a_heavy_sampler_stack_generates(http: httpx.Client) -> None:
    choice = complete(
        http,
        "Once upon a time",
        max_tokens=12,
        temperature=1.0,
        seed=3,
        dry_multiplier=0.8,
        dry_sequence_breakers='"\\n", ":", "*"',
        xtc_probability=0.5,
        mirostat=2,
        mirostat_tau=5.0,
        rep_pen=1.1,
        rep_pen_range=64,
        frequency_penalty=0.2,
        presence_penalty=0.2,
        smoothing_factor=0.2,
        dynatemp_low=0.5,
        dynatemp_high=1.5,
        top_a=0.05,
        tfs=0.95,
        typical_p=0.95,
        skew=0.5,
    )
    assert choice["finish_reason"] == "length" and choice["text"].strip()


@pytest.mark.parametrize(
    ("field", "value"), [("temperature", 11), ("top_p", 1.5), ("mirostat_mode", 3), ("dry_base", 0)]
)
def test_out_of_range_samplers_get_a_clear_400(
    http: httpx.Client, field: str, value: float
) -> None:
    response = http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1, field: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == field and field in error["message"]


def test_a_forced_preset_overrides_the_request(
    overrides: httpx.Client, client: openai.OpenAI
) -> None:
    greedy = chat_text(client, QUESTION, max_tokens=6, temperature=0)
    forced = {
        "temperature": {"override": 0.0, "force": True},
        "max_tokens": {"override": 6, "force": True},
    }
    assert (
        overrides.post("/v1/sampling/override/switch", json={"overrides": forced}).status_code
        == 200
    )
    listed = overrides.get("/v1/sampling/override/list").json()
    assert listed["overrides"]["temperature"] == {"override": 0.0, "force": True, "additive": False}
    for seed in (1, 2):
        answer = client.chat.completions.create(
            model="x", messages=QUESTION, max_tokens=30, temperature=1.8, seed=seed
        )
        assert answer.choices[0].message.content == greedy
        assert answer.usage.completion_tokens == 6


def test_a_preset_default_yields_to_the_request(
    overrides: httpx.Client, client: openai.OpenAI
) -> None:
    body = {"overrides": {"max_tokens": {"override": 3}}}
    assert overrides.post("/v1/sampling/override/switch", json=body).status_code == 200
    left_out = client.completions.create(model="x", prompt="Once upon a time", temperature=0)
    assert left_out.usage.completion_tokens == 3
    sent = client.completions.create(
        model="x", prompt="Once upon a time", temperature=0, max_tokens=5
    )
    assert sent.usage.completion_tokens == 5


def test_an_additive_stop_list_is_merged(overrides: httpx.Client, client: openai.OpenAI) -> None:
    plain = chat_text(client, QUESTION, max_tokens=12, temperature=0)
    assert plain.startswith("The capital of France is Paris")
    body = {"overrides": {"stop": {"override": [" France"], "additive": True}}}
    assert overrides.post("/v1/sampling/override/switch", json=body).status_code == 200
    assert chat_text(client, QUESTION, max_tokens=12, temperature=0, stop=[" Paris"]) == (
        "The capital of"
    )
    assert chat_text(client, QUESTION, max_tokens=12, temperature=0, stop=[" capital"]) == "The"


def test_switching_to_a_named_preset_and_back(overrides: httpx.Client, http: httpx.Client) -> None:
    assert (
        overrides.post("/v1/sampling/override/switch", json={"preset": "safe_defaults"}).status_code
        == 200
    )
    listed = overrides.get("/v1/sampling/override/list").json()
    assert listed["selected_preset"] == "safe_defaults"
    assert listed["overrides"]["temperature"]["override"] == 0.8
    assert "sample_preset" in listed["presets"]
    assert http.get("/v1/sampling/override/list").json()["presets"] == []  # admins only
    assert overrides.post("/v1/sampling/override/unload").status_code == 200
    assert overrides.get("/v1/sampling/override/list").json()["overrides"] == {}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"preset": "../config"}, 400),
        ({"preset": "no-such-preset"}, 404),
        ({"overrides": {"temperature": {"override": 99}}}, 400),
        ({"overrides": {"not_a_sampler": 1}}, 400),
        ({}, 400),
    ],
)
def test_bad_preset_switches_are_refused(overrides: httpx.Client, body: dict, status: int) -> None:
    response = overrides.post("/v1/sampling/override/switch", json=body)
    assert response.status_code == status
    assert response.json()["error"]["message"]
    assert overrides.get("/v1/sampling/override/list").json()["overrides"] == {}


def test_api_keys_cannot_switch_presets(http: httpx.Client) -> None:
    response = http.post("/v1/sampling/override/switch", json={"preset": "safe_defaults"})
    assert response.status_code == 403


def test_the_configured_preset_applies_from_start_up(tmp_path: Path) -> None:
    config = {"sampling": {"override_preset": "safe_defaults"}, "model": {"model_name": None}}
    process = ServerProcess(tmp_path, config).start(wait_for_model=False)
    try:
        with process.admin() as admin:
            listed = admin.get("/v1/sampling/override/list").json()
        assert listed["selected_preset"] == "safe_defaults"
        assert listed["overrides"]["top_p"] == {"override": 0.9, "force": False, "additive": False}
    finally:
        process.stop()


def test_a_missing_start_up_preset_stops_the_server_with_one_line(tmp_path: Path) -> None:
    # its own port: a server already on the default one (a developer's own) would be refused first
    result = run_main(["--port", str(free_port()), "--override-preset", "no-such-preset"], tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "override_preset" in result.stderr and "no-such-preset" in result.stderr
