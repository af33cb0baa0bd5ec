"""Faults: clients that vanish, unloads under load, folders that disappear."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.metrics import wait_until_idle
from tests.support.server import API_KEY, ServerProcess
from tests.support.sse import data_events

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_disconnect_during_a_long_prefill_cancels_the_job(server: ServerProcess) -> None:
    """The job stops at the next prefill chunk. Left running, its 2000 forced tokens would take
    a minute or more: the generous bound holds on a busy machine and still fails a lost cancel."""
    body = {
        "prompt": "tell me more " * 1000,
        "max_tokens": 2000,
        "min_tokens": 2000,
        "stream": True,
    }
    with httpx.stream(
        "POST", f"{server.url}/v1/completions", headers=AUTH, json=body, timeout=60
    ) as response:
        assert response.status_code == 200
        time.sleep(0.8)  # the prompt (~3000 tokens, read 256 at a time) is still being read
    assert wait_until_idle(server.url, timeout=30.0)
    with server.client() as client:
        assert (
            client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code
            == 200
        )


@pytest.fixture
def fault_server(tiny_models: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    models = tmp_path / "models"
    shutil.copytree(tiny_models / "tiny-a", models / "tiny-a")
    shutil.copytree(tiny_models / "tiny-b", models / "tiny-b")
    config = {
        "model": {"model_dir": str(models), "model_name": "tiny-a"},
        "embeddings": {"embedding_model_name": None},
    }
    process = ServerProcess(tmp_path / "work", config).start()
    yield process
    process.stop()


def test_unload_while_eight_streams_run(fault_server: ServerProcess) -> None:
    endings: list[str] = []

    def stream() -> None:
        body = {"prompt": "Hello", "max_tokens": 400, "min_tokens": 400, "stream": True}
        with httpx.stream(
            "POST", f"{fault_server.url}/v1/completions", headers=AUTH, json=body, timeout=60
        ) as response:
            last = ""
            for data in data_events(response):
                last = data
            endings.append(last)

    threads = [threading.Thread(target=stream) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    with fault_server.admin() as admin:
        assert admin.post("/v1/model/unload").status_code == 200
    for thread in threads:
        thread.join(timeout=30)
    assert len(endings) == 8
    for ending in endings:  # each stream ended with a clear error or finished before the unload
        assert ending == "[DONE]" or json.loads(ending)["error"]["type"] == "service_unavailable"
    assert httpx.get(f"{fault_server.url}/health").status_code == 503
    with (
        fault_server.admin() as admin,
        admin.stream("POST", "/v1/model/load", json={"model_name": "tiny-b"}) as response,
    ):
        response.read()
    with fault_server.client() as client:
        assert (
            client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code
            == 200
        )


def test_a_model_folder_that_disappears(fault_server: ServerProcess, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "models" / "tiny-a")  # the loaded model's folder goes away
    with fault_server.client() as client:
        answer = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
        assert answer.status_code == 200  # the weights are in memory
    with fault_server.admin() as admin:
        ids = [card["id"] for card in admin.get("/v1/models").json()["data"]]
        assert ids == ["tiny-b"]
        reload = admin.post("/v1/model/load", json={"model_name": "tiny-a"})
        assert reload.status_code == 404
        assert "not found" in reload.json()["error"]["message"]
        assert admin.get("/v1/model").json()["id"] == "tiny-a"  # still loaded and serving
    assert httpx.get(f"{fault_server.url}/health").status_code == 200
    with fault_server.client() as client:
        assert (
            client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code
            == 200
        )
