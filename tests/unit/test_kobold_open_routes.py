"""Kobold routes as KoboldCpp 1.76 guards them: info without a key, generation with one.

Kobold Lite connects with no key, reads ``protected`` from /api/extra/version and only then asks
for one; the Horde worker clears the soft prompt with ``{"value": null}``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from common.auth import Authenticator, KeyStore
from common.config import ServalConfig
from common.model import ModelContainer
from endpoints.Kobold.router import OPEN_PATHS
from endpoints.server import create_app
from endpoints.state import ServerState
from tests.support.kobold import PROMPT_ROUTES

KEY = "api-key-0123456789abcdef"


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    (tmp_path / "keys.yml").write_text(
        yaml.safe_dump({"api_key": KEY, "admin_key": "admin-key-0123456789abcdef"})
    )
    config = ServalConfig.model_validate({"network": {"api_servers": ["Kobold"]}})
    auth = Authenticator(KeyStore(tmp_path / "keys.yml"))
    state = ServerState(config=config, auth=auth, container=ModelContainer(config))
    return TestClient(create_app(state, start_model=False))


def test_info_routes_answer_without_a_key(client: TestClient) -> None:
    version = client.get("/api/extra/version")
    assert version.status_code == 200 and version.json()["protected"] is True
    assert client.get("/api/v1/info/version").json() == {"result": "1.2.5"}
    assert client.get("/api/latest/config/max_length").json() == {"value": 200}
    assert client.get("/api/extra/preloadstory").json() == {}
    assert client.get("/api/v1/config/soft_prompt").json() == {"value": ""}
    # Routes that need the model are open too, and answer 503 (not 401) without one.
    for path in ("/api/v1/model", "/api/extra/true_max_context_length"):
        assert client.get(path).status_code == 503


def test_every_open_path_is_a_route_that_answers_without_a_key(client: TestClient) -> None:
    for path in OPEN_PATHS:
        assert client.get(path).status_code in (200, 503), path


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        *PROMPT_ROUTES,
        ("POST", "/api/extra/abort", {"genkey": "x"}),
        ("POST", "/api/extra/generate/check", None),
        ("POST", "/api/extra/last_logprobs", {"genkey": "x"}),
        ("PUT", "/api/latest/config/soft_prompt/", {"value": None}),
    ],
)
def test_generation_and_state_changes_still_need_a_key(
    client: TestClient, method: str, path: str, body: dict | None
) -> None:
    assert client.request(method, path, json=body).status_code == 401


def test_perf_reports_an_idle_server_without_a_key(client: TestClient) -> None:
    perf = client.get("/api/extra/perf")
    assert perf.status_code == 200
    data = perf.json()
    assert data["idle"] == 1 and data["queue"] == 0 and data["total_gens"] == 0
    assert data["stop_reason"] == -1 and data["uptime"] >= 0
    assert {"last_process", "last_eval", "last_token_count", "idletime"} <= set(data)


@pytest.mark.parametrize("path", ["/api/latest/config/soft_prompt/", "/api/v1/config/soft_prompt"])
def test_the_horde_workers_null_soft_prompt_is_accepted(client: TestClient, path: str) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    assert client.put(path, json={"value": None}, headers=headers).status_code == 200
    named = client.put(path, json={"value": "story.zip"}, headers=headers)
    assert named.status_code == 400 and named.json()["error"]["param"] == "value"


def test_last_logprobs_of_an_unknown_genkey_is_null(client: TestClient) -> None:
    response = client.post(
        "/api/extra/last_logprobs",
        json={"genkey": "KCPP1234"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 200 and response.json() == {"logprobs": None}
