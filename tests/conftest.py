"""Shared fixtures: the default model server, tiny random models, clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ADMIN_KEY, API_KEY, ROOT, ServerProcess
from tests.support.tiny_model import build_tiny_model

DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct"
# The same model as its GGUF file, for the llama.cpp engine (scripts/fetch_default_model.py).
DEFAULT_GGUF_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct-GGUF"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with two tiny random Llama models, ``tiny-a`` and ``tiny-b``."""
    base = tmp_path_factory.mktemp("tiny-models")
    build_tiny_model(base / "tiny-a", seed=1)
    build_tiny_model(base / "tiny-b", seed=2)
    return base


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The real server with the real default model, shared by the integration tests."""
    if not (DEFAULT_MODEL / "config.json").is_file():
        pytest.fail("the default model is missing: run ./test.sh (it fetches it)")
    config = {
        "network": {"api_servers": ["OAI", "Kobold"], "sse_ping_interval": 1, "body_timeout": 2},
        "model": {"model_dir": str(ROOT / "models"), "model_name": DEFAULT_MODEL.name},
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
