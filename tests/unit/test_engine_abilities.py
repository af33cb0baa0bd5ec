"""What each engine advertises is what it implements: LoRA support is the LoraEngine interface
(its methods), drafting is ``draft_modes`` (the constructor refuses the other modes)."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from unittest.mock import Mock

import pytest

from backends.base import DraftOptions, Engine, LoadOptions, LoraEngine
from backends.registry import ENGINES, engine_class
from common.errors import UnavailableError, UnsupportedError


@pytest.mark.parametrize("backend", ENGINES)
def test_an_engine_claims_loras_exactly_when_it_implements_them(backend: str) -> None:
    cls = engine_class(backend)
    assert not inspect.isabstract(cls), f"{cls.__name__} leaves abstract methods"
    implements = all(hasattr(cls, name) for name in ("load_loras", "unload_loras"))
    assert issubclass(cls, LoraEngine) == implements
    # Every engine applies the PEFT folders of lora_dir (llama.cpp converts them to GGUF).
    assert issubclass(cls, LoraEngine), f"{backend} applies no LoRAs"


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("mode", ["model", "ngram"])
def test_draft_settings_are_refused_exactly_where_not_advertised(
    backend: str, mode: str, tmp_path: Path
) -> None:
    cls = engine_class(backend)
    options = LoadOptions(path=tmp_path, name="m", draft=DraftOptions(path=tmp_path, mode=mode))
    if mode in cls.draft_modes:
        cls(options)  # accepted: the load itself needs the library and a GPU
    else:
        with pytest.raises(UnsupportedError, match="speculative decoding") as refused:
            cls(options)
        assert refused.value.param == "draft_model"


def test_the_gpu_engines_draft_and_the_cpu_engine_does_not() -> None:
    assert engine_class("exllamav2").draft_modes == {"model", "ngram"}
    assert engine_class("exllamav3").draft_modes == {"model", "ngram"}
    assert engine_class("transformers").draft_modes == frozenset()


def test_the_container_gates_loras_on_the_engine_type(tmp_path: Path) -> None:
    from backends.exllamav2.engine import ExLlamaV2Engine
    from common.config import build_config
    from common.model import ModelContainer

    container = ModelContainer(build_config({"model": {"model_name": None}}))
    container.engine = ExLlamaV2Engine(LoadOptions(path=tmp_path, name="m"))
    with pytest.raises(UnavailableError, match="not loaded"):  # past the gate, in the engine
        asyncio.run(container.load_loras([]))
    container.engine = Mock(spec=Engine, backend="plain")
    with pytest.raises(UnsupportedError, match="plain engine cannot load LoRAs"):
        asyncio.run(container.load_loras([]))
