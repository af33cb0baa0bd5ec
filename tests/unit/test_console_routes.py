"""The web console's routes: served without a key, switched off by config, never over the API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from common.auth import Authenticator, KeyStore
from common.config import build_config
from common.model import ModelContainer
from endpoints.server import create_app
from endpoints.state import ServerState
from tests.support.server import ADMIN_KEY, API_KEY


def console_client(tmp_path: Path, web_console: bool) -> TestClient:
    config = build_config({"network": {"web_console": web_console}, "model": {"model_name": None}})
    keys = tmp_path / "api_tokens.yml"
    keys.write_text(yaml.safe_dump({"api_key": API_KEY, "admin_key": ADMIN_KEY}))
    store = KeyStore(keys)
    store.load_or_create()
    state = ServerState(config=config, auth=Authenticator(store), container=ModelContainer(config))
    return TestClient(create_app(state, start_model=False))


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return console_client(tmp_path, web_console=True)


def test_page_and_assets_need_no_key(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert 'src="console/js/app.js"' in page.text
    for asset, kind in [("console/js/app.js", "javascript"), ("console/console.css", "text/css")]:
        response = client.get(f"/{asset}")
        assert response.status_code == 200, asset
        assert kind in response.headers["content-type"]
        assert response.headers["cache-control"] == "no-cache"


def test_head_of_the_root_answers_without_a_body(client: TestClient) -> None:
    """Claude Code sends ``HEAD /`` as a reachability probe before its first request."""
    probe = client.head("/")
    assert probe.status_code == 200 and probe.content == b""
    assert probe.headers["content-type"].startswith("text/html")


def test_every_script_the_page_imports_is_served(client: TestClient) -> None:
    """No build step: each relative module import must resolve to a file that is served."""
    pending, seen = ["console/js/app.js"], set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        response = client.get(f"/{path}")
        assert response.status_code == 200, path
        for name in re.findall(r'from "\./([\w.]+)"', response.text):
            pending.append(f"console/js/{name}")
    assert len(seen) >= 5


def test_api_routes_keep_their_answers(client: TestClient) -> None:
    assert client.get("/v1/models").status_code == 401
    with_key = client.get("/v1/auth/permission", headers={"Authorization": f"Bearer {API_KEY}"})
    assert with_key.json() == {"permission": "api"}
    admin = client.get("/v1/auth/permission", headers={"X-Admin-Key": ADMIN_KEY})
    assert admin.json() == {"permission": "admin"}
    assert client.post("/v1/no-such-route", json={}).status_code == 401  # bodies need a key first
    missing = client.post(
        "/v1/no-such-route", json={}, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    assert client.get("/console/%2e%2e/index.html").status_code == 404
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_console_can_be_switched_off(tmp_path: Path) -> None:
    client = console_client(tmp_path, web_console=False)
    assert client.get("/").status_code == 404
    assert client.get("/console/js/app.js").status_code == 404
    assert client.get("/health").status_code == 503  # the API itself still answers
