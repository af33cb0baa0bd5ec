"""``POST /v1/download`` against a local stand-in hub: SillyTavern's call, progress, cancel,
refusals, and the same download from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hub import HubRepo, HubStandIn
from tests.support.server import ROOT, ServerProcess, assert_refused
from tests.support.sse import data_events

GOOD_TOKEN = "hf_good_token_for_tests"


def _folder_files(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def tiny_files(tiny_models: Path) -> dict[str, bytes]:
    return _folder_files(tiny_models / "tiny-a")


@pytest.fixture(scope="module")
def hub(tiny_files: dict[str, bytes]) -> Iterator[HubStandIn]:
    big = {"weights.bin": os.urandom(256 * 1024), "README.md": b"# slow\n"}
    repos = {
        "serval-tests/tiny": HubRepo(
            revisions={
                "main": {**tiny_files, "README.md": b"# tiny\n"},
                "v2": {"README.md": b"# tiny, v2\n", "config.json": tiny_files["config.json"]},
            }
        ),
        "serval-tests/gated": HubRepo(revisions={"main": {"README.md": b"#\n"}}, gated=True),
        "serval-tests/private": HubRepo(
            revisions={"main": {"README.md": b"# private\n"}}, token=GOOD_TOKEN
        ),
        "serval-tests/cut": HubRepo(revisions={"main": big}, cut_after={"weights.bin": 64 * 1024}),
        "serval-tests/slow": HubRepo(revisions={"main": big}, slow={"weights.bin": 0.05}),
    }
    with HubStandIn(repos).running() as running:
        yield running


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloaded-models")


@pytest.fixture(scope="module")
def server(
    hub: HubStandIn, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    loras = tmp_path_factory.mktemp("downloaded-loras")
    config = {
        "model": {"model_dir": str(models_dir), "model_name": None},
        "lora": {"lora_dir": str(loras)},
        "embeddings": {"embedding_model_name": None},
    }
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}
    process = ServerProcess(tmp_path_factory.mktemp("download-server"), config, env=env)
    process.start(wait_for_model=False)
    yield process
    process.stop()


def _leftovers(base: Path) -> list[str]:
    return sorted(path.name for path in base.iterdir() if path.name.startswith(".serval"))


def test_sillytavern_download_call_saves_a_loadable_model(
    server: ServerProcess, models_dir: Path, tiny_files: dict[str, bytes]
) -> None:
    # SillyTavern posts its own connection fields along with TabbyAPI's body.
    body = {"repo_id": "serval-tests/tiny", "api_server": server.url, "api_type": "tabby"}
    with server.admin(timeout=120) as admin:
        assert admin.get("/v1/auth/permission").json()["permission"] == "admin"
        response = admin.post("/v1/download", json=body)
        assert response.status_code == 200, response.text
        path = Path(response.json()["download_path"])
        assert path == (models_dir / "tiny").resolve()
        assert {**tiny_files, "README.md": b"# tiny\n"} == _folder_files(path)
        assert "tiny" in [card["id"] for card in admin.get("/v1/model/list").json()["data"]]
        with admin.stream("POST", "/v1/model/load", json={"model_name": "tiny"}) as load:
            assert json.loads(list(data_events(load))[-1])["status"] == "finished"
        answer = admin.post("/v1/completions", json={"prompt": "a b", "max_tokens": 2})
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] >= 1
    assert _leftovers(models_dir) == []


def test_streamed_download_reports_bytes_and_files_then_finishes(
    server: ServerProcess, models_dir: Path
) -> None:
    body = {
        "repo_id": "serval-tests/tiny",
        "revision": "v2",
        "folder_name": "tiny-v2",
        "include": ["*.md", "*.json"],
        "exclude": ["config.json"],
        "stream": True,
    }
    with server.admin() as admin, admin.stream("POST", "/v1/download", json=body) as response:
        assert response.status_code == 200
        events = [json.loads(data) for data in data_events(response)]
    last = events[-1]
    assert last["status"] == "finished" and last["files"] == last["files_done"] == 1
    assert last["bytes_done"] == last["bytes_total"] == len(b"# tiny, v2\n")
    assert _folder_files(models_dir / "tiny-v2") == {"README.md": b"# tiny, v2\n"}


def test_a_disconnect_cancels_the_download_and_leaves_no_folder(
    server: ServerProcess, models_dir: Path
) -> None:
    body = {"repo_id": "serval-tests/slow", "stream": True}
    with server.admin() as admin, admin.stream("POST", "/v1/download", json=body) as response:
        for data in data_events(response):
            event = json.loads(data)
            if event["bytes_done"] > 0:
                break  # leave mid-transfer
    assert 0 < event["bytes_done"] < event["bytes_total"]
    deadline = time.monotonic() + 30
    while (models_dir / "slow").exists() or _leftovers(models_dir):
        assert time.monotonic() < deadline, _leftovers(models_dir)
        time.sleep(0.2)
    with server.admin() as admin:  # the name is free again, and the server still serves
        assert admin.get("/health").status_code in (200, 503)


def test_a_transfer_cut_for_good_fails_cleanly(server: ServerProcess, models_dir: Path) -> None:
    with server.admin(timeout=120) as admin:
        response = admin.post("/v1/download", json={"repo_id": "serval-tests/cut"})
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "hub_error"
    assert not (models_dir / "cut").exists() and _leftovers(models_dir) == []


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"repo_id": "serval-tests/nope"}, 404, "repo_id"),
        ({"repo_id": "serval-tests/tiny", "revision": "v9", "folder_name": "new"}, 404, "revision"),
        ({"repo_id": "serval-tests/gated"}, 403, "token"),
        ({"repo_id": "serval-tests/private"}, 404, "repo_id"),
        ({"repo_id": "serval-tests/private", "token": "hf_wrong"}, 403, "token"),
        (
            {"repo_id": "serval-tests/tiny", "include": ["*.gguf"], "folder_name": "new"},
            400,
            "include",
        ),
        ({"repo_id": "serval-tests/tiny", "folder_name": "../escape"}, 400, "folder_name"),
        ({"repo_id": "serval-tests/tiny", "folder_name": "/etc"}, 400, "folder_name"),
        ({"repo_id": "not a repo id!"}, 400, "repo_id"),
    ],
)
def test_bad_downloads_get_a_clear_4xx(
    server: ServerProcess, body: dict, status: int, param: str
) -> None:
    with server.admin() as admin:
        assert_refused(admin.post("/v1/download", json=body), status, param)


def test_an_existing_folder_is_not_overwritten(server: ServerProcess, models_dir: Path) -> None:
    (models_dir / "taken").mkdir()
    (models_dir / "taken" / "mine.txt").write_text("keep me")
    body = {"repo_id": "serval-tests/tiny", "folder_name": "taken"}
    with server.admin() as admin:
        response = admin.post("/v1/download", json=body)
    assert response.status_code == 409
    assert (models_dir / "taken" / "mine.txt").read_text() == "keep me"


def test_a_private_repo_downloads_with_its_token_into_lora_dir(server: ServerProcess) -> None:
    body = {"repo_id": "serval-tests/private", "token": GOOD_TOKEN, "repo_type": "lora"}
    with server.admin() as admin:
        response = admin.post("/v1/download", json=body)
    assert response.status_code == 200, response.text
    folder = Path(response.json()["download_path"])
    assert folder.parent.name.startswith("downloaded-loras")
    assert (folder / "README.md").read_bytes() == b"# private\n"
    assert GOOD_TOKEN not in server.log()  # tokens are secrets too


def test_api_keys_cannot_download(server: ServerProcess) -> None:
    with server.client() as client:
        response = client.post("/v1/download", json={"repo_id": "serval-tests/tiny"})
    assert response.status_code == 403


def test_the_command_line_downloads_the_same_way(hub: HubStandIn, tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text(f"model:\n  model_dir: {tmp_path / 'models'}\n")
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}
    command = [sys.executable, str(ROOT / "main.py"), "download", "serval-tests/tiny"]
    command += ["--revision", "v2", "--folder-name", "cli-tiny"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "models" / "cli-tiny" / "README.md").read_bytes() == b"# tiny, v2\n"
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 1 and "already exists" in again.stderr
