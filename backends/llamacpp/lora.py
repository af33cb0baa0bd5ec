"""PEFT LoRA folders as llama.cpp adapters: each is written once as a GGUF LoRA file.

llama.cpp applies only GGUF adapters. A PEFT folder (``adapter_config.json`` and
``adapter_model.safetensors``) is converted the way llama.cpp's own ``convert_lora_to_gguf.py``
does it, with the gguf library's map of HF module names to GGUF tensor names:

- each targeted linear layer ``W`` gets ``<gguf name>.weight.lora_a`` (PEFT's ``lora_A``,
  ``[rank, in]``) and ``.lora_b`` (``lora_B``, ``[out, rank]``), as float32;
- the adapter's ``alpha`` is PEFT's ``lora_alpha``: llama.cpp scales each product by
  ``scale * alpha / rank`` as PEFT does (rsLoRA's ``alpha / sqrt(rank)`` is written as the
  ``alpha`` that gives it);
- for the ``llama`` architecture, the GGUF converter permutes the rows of ``q_proj`` and ``k_proj``
  (it reorders the rotary halves of each head, docs/llamacpp.md), so their ``lora_B`` rows are
  permuted alike.

The file goes to the user's cache folder under a digest of the adapter's files and the base
model's shape, so a LoRA is converted once and a changed one again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backends.llamacpp.native import cache_root
from common.errors import BadRequestError

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
# The HF module names PEFT saves start with this prefix; the GGUF map knows them without it.
PEFT_PREFIX = "base_model.model."
# Architectures whose GGUF converter permutes the q and k projections (LlamaModel.permute).
PERMUTED_ARCHITECTURES = frozenset({"llama"})
CONVERTER_VERSION = "1"  # part of the cache digest: a changed conversion writes files anew


@dataclass(frozen=True)
class BaseShape:
    """What the conversion needs to know of the base model, read from its GGUF metadata."""

    architecture: str
    blocks: int
    heads: int
    kv_heads: int

    def key(self) -> str:
        return f"{self.architecture}:{self.blocks}:{self.heads}:{self.kv_heads}"


def _refuse(folder: Path, why: str) -> BadRequestError:
    return BadRequestError(f"LoRA {folder.name} cannot be applied by llama.cpp: {why}.")


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise _refuse(folder, f"its {CONFIG} cannot be read ({exc})") from exc
    if not isinstance(config, dict):
        raise _refuse(folder, f"its {CONFIG} is not an object")
    if config.get("peft_type", "LORA") != "LORA":
        raise _refuse(folder, f"it is a {config.get('peft_type')} adapter, not a LoRA")
    for key, why in (
        ("use_dora", "DoRA adapters"),
        ("alpha_pattern", "a per-module lora_alpha (alpha_pattern)"),
        ("modules_to_save", "fully trained modules (modules_to_save)"),
        ("fan_in_fan_out", "Conv1D layers (fan_in_fan_out)"),
    ):
        if config.get(key):
            raise _refuse(folder, f"llama.cpp has no {why}")
    if config.get("bias", "none") != "none":
        raise _refuse(folder, "llama.cpp applies no LoRA biases")
    return config


def _alpha(folder: Path, config: dict[str, Any]) -> float:
    """The GGUF ``adapter.lora.alpha`` that makes llama.cpp's ``alpha / rank`` PEFT's scale."""
    rank = int(config.get("r", 8))
    alpha = float(config.get("lora_alpha", 8))
    if not config.get("use_rslora"):
        return alpha
    if config.get("rank_pattern"):
        raise _refuse(folder, "rsLoRA with a per-module rank cannot be given one alpha")
    return alpha * math.sqrt(rank)


def _permute_rows(rows: np.ndarray, heads: int) -> np.ndarray:
    """The GGUF converter's reordering of the output rows of a q or k projection."""
    shape = rows.shape
    split = rows.reshape(heads, 2, shape[0] // heads // 2, *shape[1:])
    return split.swapaxes(1, 2).reshape(shape)


def _tensors(folder: Path, base: BaseShape) -> dict[str, np.ndarray]:
    import gguf
    import torch
    from safetensors.torch import load_file

    try:
        weights = load_file(folder / WEIGHTS)
    except Exception as exc:
        raise _refuse(folder, f"its {WEIGHTS} cannot be read ({exc})") from exc
    architecture = next(
        (arch for arch, name in gguf.MODEL_ARCH_NAMES.items() if name == base.architecture), None
    )
    if architecture is None:
        raise _refuse(folder, f"the gguf library does not know the {base.architecture} model")
    names = gguf.get_tensor_name_map(architecture, base.blocks)
    tensors: dict[str, np.ndarray] = {}
    for key, value in weights.items():
        module, _, kind = key.removeprefix(PEFT_PREFIX).rpartition(".lora_")
        if kind not in ("A.weight", "B.weight"):
            raise _refuse(folder, f"it holds {key}, which is not a LoRA A or B matrix")
        target = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise _refuse(folder, f"{module} has no llama.cpp tensor")
        matrix = value.to(torch.float32).numpy()
        if kind == "B.weight" and base.architecture in PERMUTED_ARCHITECTURES:
            heads = {"q_proj": base.heads, "k_proj": base.kv_heads}.get(module.rpartition(".")[2])
            if heads and matrix.shape[0] % (2 * heads):
                raise _refuse(folder, f"its {module} does not match this model (made for another?)")
            if heads:
                matrix = _permute_rows(matrix, heads)
        tensors[f"{target}.lora_{kind[0].lower()}"] = np.ascontiguousarray(matrix)
    if not tensors:
        raise _refuse(folder, f"its {WEIGHTS} holds no tensors")
    return tensors


def _digest(folder: Path, base: BaseShape) -> str:
    digest = hashlib.sha256(f"{CONVERTER_VERSION}|{base.key()}|".encode())
    for name in (CONFIG, WEIGHTS):
        with open(folder / name, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:24]


def _write(target: Path, base: BaseShape, alpha: float, tensors: dict[str, np.ndarray]) -> None:
    """Write the GGUF adapter to a temporary name beside ``target``, then rename it."""
    import gguf

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".partial")
    os.close(handle)
    try:
        writer = gguf.GGUFWriter(temporary, base.architecture)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for name, matrix in tensors.items():
            writer.add_tensor(name, matrix)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def gguf_adapter(folder: Path, base: BaseShape) -> Path:
    """The GGUF LoRA file of the PEFT ``folder`` for ``base`` (converted on first use)."""
    config = _read_config(folder)
    if not (folder / WEIGHTS).is_file():
        raise _refuse(folder, f"it has no {WEIGHTS}")
    target = cache_root() / "llamacpp-loras" / f"{folder.name}-{_digest(folder, base)}.gguf"
    if not target.is_file():
        _write(target, base, _alpha(folder, config), _tensors(folder, base))
    return target
