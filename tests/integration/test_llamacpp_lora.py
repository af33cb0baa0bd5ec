"""PEFT LoRAs on llama.cpp: the converted GGUF adapter changes the logits as PEFT does on the
transformers side, and a LoRA llama.cpp cannot apply is refused with the reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from backends.llamacpp.lora import gguf_adapter
from backends.llamacpp.model import Entry, LlamaModel
from backends.registry import unavailable_reason
from common.errors import BadRequestError
from tests.conftest import DEFAULT_GGUF_MODEL, DEFAULT_MODEL
from tests.support.tiny_lora import build_tiny_lora
from tests.support.tiny_model import build_tiny_model

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaModel]:
    if unavailable_reason("llamacpp") is not None:
        pytest.skip(f"llama.cpp is unavailable here: {unavailable_reason('llamacpp')}")
    (file,) = DEFAULT_GGUF_MODEL.glob("*.gguf")
    model = LlamaModel(file, context=256, sequences=1, batch_tokens=32)
    yield model
    model.close()


@pytest.fixture(scope="module")
def lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lora(DEFAULT_MODEL, tmp_path_factory.mktemp("loras") / "smol-lora")


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def last_logits(llama: LlamaModel, ids: list[int]) -> np.ndarray:
    llama.clear()
    entries = [Entry(token, i, 0, i == len(ids) - 1) for i, token in enumerate(ids)]
    return llama.decode(entries)[0].numpy()


def peft_logits(lora: Path | None, ids: list[int]) -> np.ndarray:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL, dtype=torch.float32)
    if lora is not None:
        model = PeftModel.from_pretrained(model, lora)
    with torch.no_grad():
        logits: np.ndarray = model(torch.tensor([ids])).logits[0, -1].numpy()
    return logits


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_a_converted_lora_moves_the_logits_where_peft_moves_them(
    llama: LlamaModel, lora: Path
) -> None:
    ids = llama.tokenize(PROMPT, parse_special=False)
    alone = last_logits(llama, ids)
    llama.use_adapters([(llama.open_adapter(gguf_adapter(lora, llama.base_shape())), 1.0)])
    try:
        with_lora = last_logits(llama, ids)
    finally:
        llama.use_adapters([])
    expected = peft_logits(lora, ids)
    # The Q4_1 file against its bf16 dequantisation: close, not equal. The LoRA (on q_proj,
    # whose rows the GGUF converter permutes) moves llama.cpp's logits to PEFT's; a wrong
    # permutation left them at 0.84 of PEFT's, no closer than the model without the LoRA.
    assert correlation(with_lora, expected) > 0.99
    assert correlation(alone, expected) < 0.9
    assert np.array_equal(last_logits(llama, ids), alone)  # no LoRA in use: as before


def test_a_lora_is_converted_once(llama: LlamaModel, lora: Path) -> None:
    first = gguf_adapter(lora, llama.base_shape())
    written = first.stat().st_mtime_ns
    assert gguf_adapter(lora, llama.base_shape()) == first
    assert first.stat().st_mtime_ns == written


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"alpha_pattern": {"q_proj": 4}}, "alpha_pattern"),
        ({"bias": "all"}, "biases"),
        ({"peft_type": "IA3"}, "not a LoRA"),
    ],
)
def test_what_llama_cpp_cannot_apply_is_refused_with_the_reason(
    llama: LlamaModel, lora: Path, tmp_path: Path, change: dict[str, object], reason: str
) -> None:
    folder = tmp_path / "changed"
    folder.mkdir()
    config = json.loads((lora / "adapter_config.json").read_text()) | change
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(
        (lora / "adapter_model.safetensors").read_bytes()
    )
    with pytest.raises(BadRequestError, match=reason):
        gguf_adapter(folder, llama.base_shape())


def test_a_corrupt_adapter_file_is_refused(llama: LlamaModel, lora: Path, tmp_path: Path) -> None:
    folder = tmp_path / "corrupt"
    folder.mkdir()
    (folder / "adapter_config.json").write_bytes((lora / "adapter_config.json").read_bytes())
    (folder / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(BadRequestError, match=r"cannot be read|holds no tensors"):
        gguf_adapter(folder, llama.base_shape())


@pytest.mark.parametrize(
    ("targets", "reason"), [(("q_proj",), "made for another"), (("v_proj",), "")]
)
def test_a_lora_of_another_model_is_refused_and_the_model_keeps_serving(
    llama: LlamaModel, tmp_path: Path, targets: tuple[str, ...], reason: str
) -> None:
    # Serval refuses what it permutes; llama.cpp checks the shapes of the rest.
    tiny = build_tiny_model(tmp_path / "tiny", seed=1)
    lora = build_tiny_lora(tiny, tmp_path / "tiny-lora", targets=targets)
    with pytest.raises(BadRequestError, match=reason):
        llama.open_adapter(gguf_adapter(lora, llama.base_shape()))
    ids = llama.tokenize(PROMPT, parse_special=False)
    assert last_logits(llama, ids).shape == (llama.n_vocab,)
