"""Which engine serves a model folder, and what a machine without CUDA says about the GPU ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from loguru import logger

from backends import registry
from common.errors import BadRequestError, UnsupportedError
from tests.support.server import ROOT


def folder(tmp_path: Path, quant: str | None) -> Path:
    config: dict = {"architectures": ["LlamaForCausalLM"]}
    if quant:
        config["quantization_config"] = {"quant_method": quant, "bits": 4}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "cuda_available", lambda: False)


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "cuda_available", lambda: True)
    monkeypatch.setattr(registry.importlib.util, "find_spec", lambda name: object())


def test_without_cuda_plain_models_go_to_transformers(tmp_path: Path, no_cuda: None) -> None:
    assert registry.choose_backend(None, folder(tmp_path, None)) == "transformers"
    assert registry.choose_backend("auto", folder(tmp_path, None)) == "transformers"


@pytest.mark.parametrize("quant", ["exl2", "exl3", "gptq"])
def test_without_cuda_quants_are_refused_with_the_reason(
    tmp_path: Path, no_cuda: None, quant: str
) -> None:
    with pytest.raises(UnsupportedError, match="no CUDA GPU is visible"):
        registry.choose_backend(None, folder(tmp_path, quant))


def test_asking_for_a_gpu_engine_without_cuda_says_why(tmp_path: Path, no_cuda: None) -> None:
    with pytest.raises(UnsupportedError, match="exllamav2 engine is unavailable: no CUDA GPU"):
        registry.choose_backend("exllamav2", folder(tmp_path, None))
    with pytest.raises(BadRequestError, match="Unknown backend"):
        registry.choose_backend("vllm", folder(tmp_path, None))
    with pytest.raises(UnsupportedError, match="serves GGUF files only"):
        registry.choose_backend("llamacpp", folder(tmp_path, None))


def test_with_cuda_each_format_gets_its_engine(tmp_path: Path, cuda: None) -> None:
    assert registry.choose_backend(None, folder(tmp_path, "exl3")) == "exllamav3"
    assert registry.choose_backend(None, folder(tmp_path, "exl2")) == "exllamav2"
    assert registry.choose_backend(None, folder(tmp_path, "gptq")) == "exllamav2"
    assert registry.choose_backend(None, folder(tmp_path, None)) == "exllamav2"
    assert registry.choose_backend("transformers", folder(tmp_path, None)) == "transformers"


def test_start_up_says_in_one_line_why_the_gpu_engines_are_unavailable(no_cuda: None) -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    try:
        registry.log_engine_availability()
    finally:
        logger.remove(sink)
    assert len(lines) == 1
    assert "exllamav2 and exllamav3 unavailable (no CUDA GPU is visible to torch)" in lines[0]
    if registry.unavailable_reason("llamacpp") is None:
        assert "the CPU engines serve (llama.cpp for GGUF files" in lines[0]
    else:
        assert "the transformers engine serves" in lines[0]


def test_importing_exllamav2_without_cuda_is_a_clear_error_not_a_crash() -> None:
    """``import exllamav2`` raises OSError (not ImportError) without CUDA; the engine turns any
    import failure into a 503 that says why. Run in a fresh interpreter: this one may hold the
    CPU stub of exllamav2's extension."""
    script = (
        "import asyncio\n"
        "from backends.exllama.loading import import_engine_library\n"
        "async def main():\n"
        "    try:\n"
        "        async for _ in import_engine_library('exllamav2', 'exllamav2_ext', 2):\n"
        "            pass\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__, exc.status_code, exc.message)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "UnavailableError 503 The exllamav2 engine cannot start:" in done.stdout
    assert "OSError" in done.stdout or "ModuleNotFoundError" in done.stdout


@pytest.mark.parametrize(
    ("model", "fastest", "served"),
    [
        ({}, True, "SmolLM2-135M-Instruct-GGUF"),  # no GPU, llama.cpp runs: its GGUF file
        ({}, False, "SmolLM2-135M-Instruct"),  # a GPU, or no llama.cpp: the HF folder
        ({"backend": "transformers"}, True, "SmolLM2-135M-Instruct"),
        ({"model_name": "tiny"}, True, "tiny"),  # any other model is served as named
        ({"model_name": None}, True, None),
    ],
)
def test_the_default_model_starts_in_its_fastest_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: dict, fastest: bool, served: str | None
) -> None:
    from common.config import build_config
    from common.model import ModelContainer

    (tmp_path / "SmolLM2-135M-Instruct").mkdir()
    (tmp_path / "SmolLM2-135M-Instruct-GGUF").mkdir()
    monkeypatch.setattr("common.model.gguf_is_fastest_here", lambda: fastest)
    config = build_config({"model": {"model_dir": str(tmp_path), **model}})
    assert ModelContainer(config).startup_model_name() == served
