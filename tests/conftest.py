"""Shared fixtures: the default model server, tiny random models, clients."""

from __future__ import annotations

import os

if "PYTEST_XDIST_WORKER" in os.environ:
    # Two workers share the machine: torch in each of them, and in every server they start
    # (which inherits this environment), takes one thread, since torch's thread pools slow
    # down many times over when more threads want the cores than there are cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.server import ADMIN_KEY, API_KEY, ROOT, ServerProcess
from tests.support.tiny_model import build_tiny_model
from tests.support.tiny_vlm import build_tiny_vlm

DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct"
# The same model as its GGUF file, for the llama.cpp engine (scripts/fetch_default_model.py).
DEFAULT_GGUF_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct-GGUF"
OTHER_KEY = "second-api-key-for-tests-0123456789"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with two tiny random Llama models, ``tiny-a`` and ``tiny-b``."""
    base = tmp_path_factory.mktemp("tiny-models")
    build_tiny_model(base / "tiny-a", seed=1)
    build_tiny_model(base / "tiny-b", seed=2)
    return base


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random vision-language model (LLaVA) folder, ``tiny-vlm``, alone in its folder."""
    return build_tiny_vlm(tmp_path_factory.mktemp("vlm-models") / "tiny-vlm", seed=3)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The real server with the real default model, shared by the integration tests."""
    if not (DEFAULT_MODEL / "config.json").is_file():
        pytest.fail("the default model is missing: run ./test.sh (it fetches it)")
    config = {
        "network": {"api_servers": ["OAI", "Kobold"], "sse_ping_interval": 1, "body_timeout": 2},
        # The HF folder on the transformers engine (on a CPU the default model would start from
        # its GGUF file, which the conformance suite and tests/integration/test_startup.py cover).
        "model": {
            "model_dir": str(ROOT / "models"),
            "model_name": DEFAULT_MODEL.name,
            "backend": "transformers",
        },
        "embeddings": {"embedding_model_dir": str(ROOT / "models")},
    }
    process = ServerProcess(tmp_path_factory.mktemp("server"), config).start()
    yield process
    process.stop()


@pytest.fixture
def api_key() -> str:
    return API_KEY


@pytest.fixture
def admin_key() -> str:
    return ADMIN_KEY


@pytest.fixture
def other_key(server: ServerProcess) -> Iterator[str]:
    """A second api key in the shared server's key file (restored afterwards)."""
    path = server.workdir / "api_tokens.yml"
    original = path.read_text()

    def status() -> int:
        url = f"{server.url}/v1/model"  # a route that needs a key
        return httpx.get(url, headers={"Authorization": f"Bearer {OTHER_KEY}"}).status_code

    path.write_text(yaml.safe_dump({"admin_key": ADMIN_KEY, "api_key": [API_KEY, OTHER_KEY]}))
    try:
        deadline = time.monotonic() + 5
        while status() != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        yield OTHER_KEY
    finally:
        path.write_text(original)
        deadline = time.monotonic() + 5
        while status() != 401 and time.monotonic() < deadline:
            time.sleep(0.2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``), one worker takes a whole file, and the folders
    whose files share one set of servers (the conformance engines, the browser's console
    server) go whole to one worker, so each server starts once."""
    tests = ROOT / "tests"
    for item in items:
        relative = item.path.relative_to(tests)
        shared = relative.parts[0] in ("conformance", "browser")
        item.add_marker(pytest.mark.xdist_group(relative.parts[0] if shared else str(relative)))
