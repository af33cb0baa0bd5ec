"""CORS by default, as TabbyAPI and KoboldCpp: any page with a key; loopback pages without auth."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from common.auth import Authenticator, KeyStore
from common.config import ServalConfig
from common.model import ModelContainer
from endpoints.server import create_app
from endpoints.state import ServerState

KEYS = {"api_key": "api-key-0123456789abcdef", "admin_key": "admin-key-0123456789abcdef"}
HOSTED_PAGE = "https://lite.koboldai.net"


def _client(network: dict, tmp_path: Path) -> TestClient:
    config = ServalConfig.model_validate({"network": network})
    store = None
    if not config.network.disable_auth:
        (tmp_path / "api_tokens.yml").write_text(yaml.safe_dump(KEYS))
        store = KeyStore(tmp_path / "api_tokens.yml")
    auth = Authenticator(store)
    state = ServerState(config=config, auth=auth, container=ModelContainer(config))
    return TestClient(create_app(state, start_model=False))


def _preflight(client: TestClient, origin: str) -> str | None:
    response = client.options(
        "/v1/models",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    return response.headers.get("access-control-allow-origin")


def test_with_keys_any_origin_may_call_by_default(tmp_path: Path) -> None:
    with _client({}, tmp_path) as client:
        assert _preflight(client, HOSTED_PAGE) == "*"
        response = client.get(
            "/v1/models",
            headers={"Origin": HOSTED_PAGE, "Authorization": f"Bearer {KEYS['api_key']}"},
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        refused = client.get("/v1/models", headers={"Origin": HOSTED_PAGE})
        assert refused.status_code == 401  # the page can read why it was refused
        assert refused.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:8000", True),
        ("http://127.0.0.1:5001", True),
        ("http://[::1]:3000", True),
        ("http://localhost", True),
        (HOSTED_PAGE, False),
        ("http://localhost.evil.example", False),
        ("http://127.0.0.1.evil.example", False),
    ],
)
def test_without_auth_only_loopback_pages_are_trusted(
    origin: str, allowed: bool, tmp_path: Path
) -> None:
    with _client({"disable_auth": True}, tmp_path) as client:
        assert (_preflight(client, origin) == origin) is allowed


def test_configured_origins_replace_the_default_and_an_empty_list_turns_cors_off(
    tmp_path: Path,
) -> None:
    with _client({"cors_origins": ["http://my.app"]}, tmp_path) as client:
        assert _preflight(client, "http://my.app") == "http://my.app"
        assert _preflight(client, HOSTED_PAGE) is None
    with _client({"cors_origins": []}, tmp_path) as client:
        assert _preflight(client, HOSTED_PAGE) is None
