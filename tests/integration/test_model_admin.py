"""Loading, unloading and listing models over HTTP, on tiny models and the default model."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL
from tests.support.files import link_tree
from tests.support.server import ServerProcess
from tests.support.sse import json_events


@pytest.fixture(scope="module")
def models_dir(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("admin-models")
    link_tree(tiny_models / "tiny-a", base / "tiny-a")
    link_tree(tiny_models / "tiny-b", base / "nested" / "tiny-b")
    link_tree(DEFAULT_MODEL, base / DEFAULT_MODEL.name)
    (base / "not-a-model").mkdir()
    (base / "not-a-model" / "notes.txt").write_text("hello")
    corrupt = base / "corrupt"
    shutil.copytree(tiny_models / "tiny-a", corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    outside = tmp_path_factory.mktemp("outside")
    (base / "linked").symlink_to(outside / "elsewhere-model")  # a model kept on another disk
    shutil.copytree(tiny_models / "tiny-b", outside / "elsewhere-model")
    return base


@pytest.fixture(scope="module")
def admin_server(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    config = {
        "model": {"model_dir": str(models_dir), "model_name": "tiny-a"},
        "embeddings": {"embedding_model_name": None},
    }
    process = ServerProcess(tmp_path_factory.mktemp("admin-server"), config).start()
    yield process
    process.stop()


def _load(client: httpx.Client, body: dict) -> tuple[httpx.Response, list[dict]]:
    with client.stream("POST", "/v1/model/load", json=body) as response:
        response.read()
        events = json_events(response) if response.status_code == 200 else []
    return response, events


def _complete(client: httpx.Client) -> httpx.Response:
    return client.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 3})


def test_admin_lists_every_folder_and_api_key_only_the_loaded_one(
    admin_server: ServerProcess,
) -> None:
    with admin_server.admin() as admin:
        ids = {card["id"]: card for card in admin.get("/v1/models").json()["data"]}
    assert {"tiny-a", "nested/tiny-b", DEFAULT_MODEL.name, "corrupt"} <= set(ids)
    assert "not-a-model" not in ids
    assert "linked" in ids  # a folder the operator linked into model_dir is served
    assert ids["tiny-a"]["max_model_len"] == 512
    with admin_server.client() as client:
        loaded = client.get("/v1/models").json()["data"]
    assert [card["id"] for card in loaded] == ["tiny-a"]


def test_load_streams_progress_and_serves_the_new_model(admin_server: ServerProcess) -> None:
    with admin_server.admin(timeout=120) as admin:
        response, events = _load(admin, {"model_name": DEFAULT_MODEL.name})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert len(events) >= 2
        assert all(set(e) == {"model_type", "module", "modules", "status"} for e in events)
        assert [e["module"] for e in events] == sorted(e["module"] for e in events)
        assert events[-1]["status"] == "finished"
        card = admin.get("/v1/model").json()
        assert card["id"] == DEFAULT_MODEL.name
        assert card["parameters"]["max_seq_len"] == 8192
        assert _complete(admin).status_code == 200
        # Loading what is loaded is immediate.
        response, events = _load(admin, {"model_name": DEFAULT_MODEL.name})
        assert events == [{"model_type": "model", "module": 1, "modules": 1, "status": "finished"}]
        response, events = _load(admin, {"model_name": "nested/tiny-b"})
        assert events[-1]["status"] == "finished"
        assert admin.get("/v1/model").json()["id"] == "nested/tiny-b"


def test_a_symlinked_model_folder_loads_by_its_name_in_model_dir(
    admin_server: ServerProcess,
) -> None:
    """TabbyAPI follows links the operator put in model_dir; Serval refused them before."""
    with admin_server.admin() as admin:
        response, events = _load(admin, {"model_name": "linked"})
        assert response.status_code == 200, response.text
        assert events[-1]["status"] == "finished"
        assert admin.get("/v1/model").json()["id"] == "linked"
        assert _complete(admin).status_code == 200
        _load(admin, {"model_name": "tiny-a"})


def test_unload_then_reload(admin_server: ServerProcess) -> None:
    with admin_server.admin() as admin:
        assert admin.post("/v1/model/unload").status_code == 200
        assert httpx.get(f"{admin_server.url}/health").status_code == 503
        refused = _complete(admin)
        assert refused.status_code == 503
        assert "No model is loaded" in refused.json()["error"]["message"]
        assert admin.post("/v1/model/unload").status_code == 503
        _, events = _load(admin, {"model_name": "tiny-a"})
        assert events[-1]["status"] == "finished"
        assert httpx.get(f"{admin_server.url}/health").status_code == 200
        assert _complete(admin).status_code == 200


@pytest.mark.parametrize(
    ("name", "status", "words"),
    [
        ("does-not-exist", 404, "not found"),
        ("not-a-model", 400, "config.json"),
        ("corrupt", 400, "corrupt"),
        ("../outside", 400, "inside"),
        ("/etc", 400, "inside"),
        ("nested/../../x", 400, "inside"),
        ("linked/../../outside", 400, "inside"),
    ],
)
def test_bad_loads_are_refused_and_leave_the_model_serving(
    admin_server: ServerProcess, name: str, status: int, words: str
) -> None:
    with admin_server.admin() as admin:
        before = admin.get("/v1/model").json()["id"]
        response, _ = _load(admin, {"model_name": name})
        assert response.status_code == status, response.text
        assert words in response.json()["error"]["message"]
        assert admin.get("/v1/model").json()["id"] == before
        assert _complete(admin).status_code == 200


def test_api_keys_cannot_load_or_unload(admin_server: ServerProcess) -> None:
    with admin_server.client() as client:
        assert client.post("/v1/model/load", json={"model_name": "tiny-a"}).status_code == 403
        assert client.post("/v1/model/unload").status_code == 403
