"""Real clients' requests replayed against the real server, and the fields each one reads.

The bodies and call sequences are in tests/fixtures/kobold_clients and tests/fixtures/clients;
each file says which client and source it was reconstructed from.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.generation import UNSUPPORTED_HEADER
from tests.support.server import ROOT, ServerProcess
from tests.support.sse import json_events

FIXTURES = ROOT / "tests" / "fixtures"


def fixture(path: str) -> dict[str, Any]:
    return json.loads((FIXTURES / path).read_text(encoding="utf-8"))


def test_sillytavern_tabbyapi_body_names_nothing_it_did_not_ask_for(server: ServerProcess) -> None:
    """Its ~60 keys carry CFG, smoothing_curve and speculative_ngram at their neutral values."""
    body = fixture("clients/sillytavern_tabbyapi.json")["body"]
    with server.client(timeout=120) as client:
        response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"].strip()
    assert UNSUPPORTED_HEADER not in response.headers


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"speculative_ngram": True}, "speculative_ngram"),
        ({"smoothing_factor": 0.3, "smoothing_curve": 2}, "smoothing_curve"),
    ],
)
def test_sillytavern_settings_no_engine_applies_are_named(
    server: ServerProcess, changes: dict, named: str
) -> None:
    body = {**fixture("clients/sillytavern_tabbyapi.json")["body"], **changes, "max_tokens": 2}
    with server.client(timeout=120) as client:
        response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.headers[UNSUPPORTED_HEADER] == named


@pytest.mark.parametrize(
    ("body", "route"),
    [
        ("clients/sillytavern_tabbyapi.json", "/v1/completions"),
        ("kobold_clients/kobold_lite_default.json", "/api/v1/generate"),
    ],
)
def test_cfg_of_sillytavern_and_koboldcpp_is_applied(
    server: ServerProcess, body: str, route: str
) -> None:
    """CFG (guidance_scale with a negative prompt) runs on the CPU engine: nothing named."""
    cfg = {"guidance_scale": 1.5, "negative_prompt": "sad", "max_tokens": 2, "max_length": 2}
    with server.client(timeout=120) as client:
        response = client.post(route, json={**fixture(body)["body"], **cfg})
    assert response.status_code == 200, response.text
    assert UNSUPPORTED_HEADER not in response.headers


def test_koboldcpp_settings_no_engine_applies_are_named_and_nsigma_is_applied(
    server: ServerProcess,
) -> None:
    body = {
        **fixture("kobold_clients/kobold_lite_default.json")["body"],
        "max_length": 2,
        "nsigma": 1.0,
        "adaptive_target": 0.4,
        "adaptive_decay": 0.9,
    }
    with server.client(timeout=120) as client:
        response = client.post("/api/v1/generate", json=body)
    assert response.status_code == 200, response.text
    assert response.headers[UNSUPPORTED_HEADER] == "adaptive_target,adaptive_decay"


def test_kobold_lite_connects_without_a_key_then_generates_with_one(
    server: ServerProcess, api_key: str
) -> None:
    sequence = fixture("kobold_clients/kobold_lite_connect.json")
    answers: dict[str, dict] = {}
    with httpx.Client(base_url=server.url, timeout=60) as lite:
        for step in sequence["steps"]:
            headers = {"Authorization": f"Bearer {api_key}"} if step["key"] else {}
            response = lite.request(step["method"], step["path"], headers=headers)
            assert response.status_code == 200, (step, response.text)
            data = response.json()
            assert all(field in data for field in step["reads"]), (step, data)
            answers[f"{step['path']} key={step['key']}"] = data
        assert answers["/api/extra/version key=False"]["protected"] is True  # Lite asks for a key
        assert answers["/api/v1/model key=True"]["result"] == "serval/SmolLM2-135M-Instruct"
        body = {**fixture("kobold_clients/kobold_lite_default.json")["body"], "max_length": 3}
        refused = lite.post("/api/v1/generate", json=body)
        assert refused.status_code == 401
        generated = lite.post(
            "/api/v1/generate", json=body, headers={"Authorization": f"Bearer {api_key}"}
        )
        assert generated.status_code == 200 and generated.json()["results"][0]["text"]


def test_perf_reports_the_last_generation(server: ServerProcess) -> None:
    with server.client(timeout=120) as client:
        body = {"prompt": "Once upon a time", "max_length": 3, "use_default_badwordsids": True}
        assert client.post("/api/v1/generate", json=body).status_code == 200
    perf = httpx.get(f"{server.url}/api/extra/perf").json()  # no key, as Lite asks
    assert perf["total_gens"] >= 1
    assert perf["last_token_count"] >= 1 and perf["last_eval"] >= 0
    assert perf["stop_reason"] in (0, 1, 2)
    assert perf["idle"] in (0, 1) and perf["uptime"] > 0


def test_kobold_logprobs_in_results_and_from_last_logprobs(server: ServerProcess) -> None:
    body = {"prompt": "Once upon a time", "max_length": 3, "logprobs": True, "genkey": "KCPP4321"}
    body["use_default_badwordsids"] = True
    with server.client(timeout=120) as client:
        result = client.post("/api/v1/generate", json=body).json()["results"][0]
        again = client.post("/api/extra/last_logprobs", json={"genkey": "KCPP4321"}).json()
        plain = client.post("/api/v1/generate", json={**body, "logprobs": False, "genkey": "K2"})
    content = result["logprobs"]["content"]
    assert len(content) == result["completion_tokens"] == 3
    assert all(len(entry["top_logprobs"]) <= 5 and entry["logprob"] <= 0 for entry in content)
    assert "".join(entry["token"] for entry in content) == result["text"]
    assert again["logprobs"]["content"] == content
    assert "logprobs" not in plain.json()["results"][0]


@pytest.fixture(scope="module")
def open_server(
    tiny_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server without keys (the Horde worker's generation calls send none)."""
    config = {
        "network": {"disable_auth": True, "api_servers": ["Kobold"]},
        "model": {"model_dir": str(tiny_models), "model_name": "tiny-a"},
        "draft_model": {"draft_model_dir": str(tiny_models)},
        "embeddings": {"embedding_model_name": None},
    }
    process = ServerProcess(tmp_path_factory.mktemp("horde-server"), config, keys=False).start()
    yield process
    process.stop()


def test_the_horde_workers_calls_succeed(open_server: ServerProcess) -> None:
    calls = fixture("kobold_clients/horde_worker.json")["steps"]
    with httpx.Client(base_url=open_server.url, timeout=120) as worker:
        for call in calls:
            response = worker.request(call["method"], call["path"], json=call.get("body"))
            assert response.status_code == 200, (call["path"], response.text)
            data = response.json()
            assert all(field in data for field in call.get("reads", [])), (call["path"], data)
    assert isinstance(data["results"][0]["text"], str)


def test_the_tabbyapi_loader_loads_with_its_name_and_draft_fields(
    open_server: ServerProcess,
) -> None:
    body = fixture("clients/tabbyapi_loader.json")["body"]
    with httpx.Client(base_url=open_server.url, timeout=120) as loader:
        with loader.stream("POST", "/v1/model/load", json={**body, "draft": None}) as response:
            assert response.status_code == 200
            events = json_events(response)
        assert events[-1]["status"] == "finished"
        assert loader.get("/v1/model").json()["parameters"]["max_seq_len"] == 256
        # "draft" is read as the draft model: the CPU engine refuses one, naming it.
        refused = loader.post("/v1/model/load", json=body)
        assert refused.status_code == 400 and "draft" in refused.json()["error"]["message"]
