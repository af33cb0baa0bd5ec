"""GPU tests: marked ``gpu`` and skipped where torch sees no CUDA device.

They load the real ExLlama engines on a tiny fp16 model (scripts/gpu_check.py builds it) and
compare them with the transformers engine's model; scripts/gpu_check.sh runs them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support.scripts import import_script
from tests.support.server import ServerProcess

ENGINES = ("exllamav2", "exllamav3")


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run scripts/gpu_check.sh on one)")
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.gpu)
            if not _cuda():
                item.add_marker(skip)


@pytest.fixture(scope="session")
def check() -> ModuleType:
    """scripts/gpu_check.py, imported as a module."""
    return import_script("gpu_check")


@pytest.fixture(scope="session")
def check_models(check: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("gpu-models")
    check.build_lora(base / "tiny-lora", check.build_check_model(base))
    return base


@pytest.fixture(scope="session", params=ENGINES)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def reference(check: ModuleType, check_models: Path) -> Any:
    return check.reference_model(check_models / "tiny")


@pytest.fixture(scope="module")
def engine(check: ModuleType, check_models: Path, backend: str) -> Iterator[Any]:
    loaded = check.load_engine(backend, check_models / "tiny", max_seq_len=2048)
    yield loaded
    asyncio.run(loaded.unload())


@pytest.fixture(scope="module")
def served(check_models: Path, backend: str) -> Iterator[ServerProcess]:
    """The real server on this engine, with the check model."""
    config = {
        "network": {"api_servers": ["OAI"]},
        "model": {"model_dir": str(check_models), "model_name": "tiny", "backend": backend},
        "lora": {"lora_dir": str(check_models)},
        "embeddings": {"embedding_model_name": None},
    }
    process = ServerProcess(check_models / f"server-{backend}", config).start(timeout=600)
    yield process
    process.stop()
