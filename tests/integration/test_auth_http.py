"""Authentication over HTTP: header forms, 401 vs 403, hot reload, disable_auth."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.server import ADMIN_KEY, API_KEY, ROOT, ServerProcess


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "code"}
    return body["error"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {API_KEY}"},
        {"X-API-Key": API_KEY},
        {"X-Admin-Key": ADMIN_KEY},
        {"Authorization": f"Bearer {ADMIN_KEY}"},
    ],
)
def test_each_header_form_is_accepted(server: ServerProcess, headers: dict) -> None:
    response = httpx.get(f"{server.url}/v1/models", headers=headers)
    assert response.status_code == 200


def test_missing_key_is_401_and_wrong_level_is_403(server: ServerProcess) -> None:
    missing = httpx.get(f"{server.url}/v1/models")
    assert missing.status_code == 401
    assert _error(missing)["type"] == "authentication_error"
    wrong = httpx.get(f"{server.url}/v1/models", headers={"X-API-Key": "not-a-key"})
    assert wrong.status_code == 401
    too_low = httpx.post(
        f"{server.url}/v1/model/unload", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert too_low.status_code == 403
    assert _error(too_low)["type"] == "permission_error"


def test_permission_route_reports_the_level(server: ServerProcess) -> None:
    with server.client() as client:
        assert client.get("/v1/auth/permission").json() == {"permission": "api"}
    with server.admin() as client:
        assert client.get("/v1/auth/permission").json() == {"permission": "admin"}


def test_keys_reload_without_restart(server: ServerProcess) -> None:
    path = server.workdir / "api_tokens.yml"
    original = path.read_text()
    try:
        path.write_text(
            yaml.safe_dump({"admin_key": ADMIN_KEY, "api_key": [API_KEY, "freshly-added-key-42"]})
        )
        deadline = time.monotonic() + 5
        status = 0
        while time.monotonic() < deadline and status != 200:
            status = httpx.get(
                f"{server.url}/v1/models", headers={"X-API-Key": "freshly-added-key-42"}
            ).status_code
            time.sleep(0.3)
        assert status == 200
    finally:
        path.write_text(original)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status = httpx.get(
            f"{server.url}/v1/models", headers={"X-API-Key": "freshly-added-key-42"}
        ).status_code
        if status == 401:
            break
        time.sleep(0.3)
    assert status == 401


def test_keys_never_appear_in_full_in_the_log(server: ServerProcess) -> None:
    log = server.log()
    assert ADMIN_KEY not in log and API_KEY not in log


def test_disable_auth_lets_everyone_in_and_warns(tmp_path: Path) -> None:
    config = {
        "network": {"disable_auth": True},
        "model": {"model_name": None, "model_dir": str(ROOT / "models")},
        "embeddings": {"embedding_model_name": None},
    }
    process = ServerProcess(tmp_path, config, keys=False).start(wait_for_model=False)
    try:
        response = httpx.get(f"{process.url}/v1/auth/permission")
        assert response.json() == {"permission": "admin"}
        assert "AUTHENTICATION IS DISABLED" in process.log()
        assert not (tmp_path / "api_tokens.yml").exists()
    finally:
        process.stop()
