"""Which engine serves a model folder, and creating it without importing the others.

GPU engines are imported only when chosen: ``import exllamav2`` raises ``OSError`` (not
``ImportError``) on a machine without CUDA, and compiles its extension on first use.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

from loguru import logger

from backends.base import Engine, LoadOptions
from common.errors import BadRequestError, UnsupportedError

ENGINES = ("exllamav2", "exllamav3", "llamacpp", "transformers")


@functools.cache
def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def unavailable_reason(backend: str) -> str | None:
    """Why ``backend`` cannot run here, or None when it can."""
    if backend == "transformers":
        return None if importlib.util.find_spec("transformers") else "transformers is not installed"
    if backend == "llamacpp":
        return llamacpp_unavailable_reason()
    if not cuda_available():
        return "no CUDA GPU is visible to torch"
    if importlib.util.find_spec(backend) is None:
        extra = "exl2" if backend == "exllamav2" else "exl3"
        return f"{backend} is not installed (install the {extra} extra)"
    return None


@functools.cache
def llamacpp_unavailable_reason() -> str | None:
    """Why llama.cpp cannot run here (its wheel missing or its library refused), else None."""
    try:
        from backends.llamacpp import native

        native.load()
    except (ImportError, OSError, RuntimeError) as exc:
        return f"llama.cpp cannot be loaded ({exc}; it comes with the cpu extra)"
    return None


def gguf_is_fastest_here() -> bool:
    """Whether a GGUF file of a model is the fastest way to serve it on this machine: there is
    no CUDA GPU and llama.cpp runs (its 4-bit kernels decode the default model 3x faster than
    the transformers engine's bf16, and more against fp32: docs/benchmarks.md)."""
    return not cuda_available() and unavailable_reason("llamacpp") is None


def has_gguf(model_dir: Path) -> bool:
    return any(path.is_file() for path in model_dir.glob("*.gguf"))


def quantization_of(model_dir: Path) -> str | None:
    """The quantisation method named in config.json (exl2, exl3, gptq...), if any."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    quant = config.get("quantization_config") or {}
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    return str(method).lower() if method else None


def choose_backend(requested: str | None, model_dir: Path) -> str:
    """The engine for ``model_dir``: the one asked for, or by format and hardware. A folder
    with a GGUF file is llama.cpp's (the only engine that reads GGUF)."""
    quant = quantization_of(model_dir)
    gguf = has_gguf(model_dir)
    if requested and requested != "auto":
        if requested not in ENGINES:
            raise BadRequestError(f"Unknown backend {requested!r}; choose one of {ENGINES}")
        backend = requested
    elif gguf:
        backend = "llamacpp"
    elif quant == "exl3":
        backend = "exllamav3"
    elif quant in ("exl2", "gptq") or (quant is None and cuda_available()):
        backend = "exllamav2" if unavailable_reason("exllamav2") is None else "transformers"
    else:
        backend = "transformers"
    if quant in ("exl2", "exl3", "gptq") and backend == "transformers":
        raise UnsupportedError(
            f"This model is a {quant.upper()} quant, which only the GPU engines can load "
            f"({unavailable_reason('exllamav3' if quant == 'exl3' else 'exllamav2')})."
        )
    if (backend == "llamacpp") != gguf:
        raise UnsupportedError(
            "The llamacpp engine serves GGUF files only."
            if gguf is False
            else f"{model_dir.name} holds a GGUF file, which only the llamacpp engine reads."
        )
    reason = unavailable_reason(backend)
    if reason:
        raise UnsupportedError(f"The {backend} engine is unavailable: {reason}.")
    return backend


def engine_class(backend: str) -> type[Engine]:
    """The engine class for ``backend``, importing only its module."""
    if backend == "transformers":
        from backends.transformers.engine import TransformersEngine

        return TransformersEngine
    if backend == "llamacpp":
        from backends.llamacpp.engine import LlamaCppEngine

        return LlamaCppEngine
    if backend == "exllamav2":
        from backends.exllamav2.engine import ExLlamaV2Engine

        return ExLlamaV2Engine
    if backend == "exllamav3":
        from backends.exllamav3.engine import ExLlamaV3Engine

        return ExLlamaV3Engine
    raise BadRequestError(f"Unknown backend {backend!r}")


def create_engine(backend: str, options: LoadOptions) -> Engine:
    return engine_class(backend)(options)


def gpu_engines_note() -> str | None:
    """One line saying why the GPU engines cannot run here, or None when both can."""
    reasons = {b: unavailable_reason(b) for b in ("exllamav2", "exllamav3")}
    missing = {b: r for b, r in reasons.items() if r}
    if not missing:
        return None
    names = " and ".join(missing)
    if len(set(missing.values())) == 1:
        why = next(iter(missing.values()))
    else:
        why = "; ".join(f"{b}: {r}" for b, r in missing.items())
    if len(missing) < 2:
        serves = "the other engines serve"
    elif unavailable_reason("llamacpp") is None:
        serves = "the CPU engines serve (llama.cpp for GGUF files, transformers for the rest)"
    else:
        serves = "the transformers engine serves"
    return f"{names} unavailable ({why}); {serves}"


def log_engine_availability() -> None:
    """One start-up line when a GPU engine cannot run here, saying why."""
    note = gpu_engines_note()
    if note:
        logger.info(note)
