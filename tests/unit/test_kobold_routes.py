"""The Kobold routes in an app without a model: mounting, 503s, and what works without one."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from common.auth import Authenticator
from common.config import ServalConfig
from common.model import ModelContainer
from endpoints.server import create_app
from endpoints.state import ServerState
from tests.support.kobold import PROMPT_ROUTES


def _client(api_servers: list[str]) -> TestClient:
    config = ServalConfig.model_validate({"network": {"api_servers": api_servers}})
    state = ServerState(config=config, auth=Authenticator(None), container=ModelContainer(config))
    return TestClient(create_app(state, start_model=False))


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        *PROMPT_ROUTES,
        ("POST", "/api/latest/generate", {"prompt": "Hi"}),
        ("GET", "/api/v1/model", None),
        ("GET", "/api/v1/config/max_context_length", None),
        ("GET", "/api/extra/true_max_context_length", None),
    ],
)
def test_routes_that_need_the_model_answer_503_without_one(
    method: str, path: str, body: dict | None
) -> None:
    with _client(["OAI", "Kobold"]) as client:
        response = client.request(method, path, json=body)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_not_loaded"


def test_genkey_and_info_routes_answer_without_a_model() -> None:
    with _client(["Kobold"]) as client:
        assert client.post("/api/extra/generate/check").json() == {"results": [{"text": ""}]}
        assert client.post("/api/extra/abort", json={"genkey": "x"}).json() == {
            "success": False,
            "done": True,
        }
        assert client.get("/api/extra/version").json()["result"] == "KoboldCpp"
        assert client.get("/api/v1/config/max_length").json() == {"value": 200}


def test_kobold_routes_exist_only_when_configured() -> None:
    with _client(["OAI"]) as client:
        assert client.post("/api/v1/generate", json={"prompt": "Hi"}).status_code == 404
        assert client.get("/api/extra/version").status_code == 404
        assert "/api/v1/generate" not in client.get("/openapi.json").json()["paths"]
    with _client(["Kobold"]) as client:
        paths = client.get("/openapi.json").json()["paths"]
        assert "/api/v1/generate" in paths and "/api/extra/abort" in paths
        assert not any(path.startswith("/api/latest") for path in paths)
        assert client.post("/v1/completions", json={"prompt": "Hi"}).status_code == 404
