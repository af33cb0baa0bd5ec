"""Reading an ExLlamaV2 model folder: its config with Serval's runtime settings, its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.base import SpecialTokens
from backends.exllama.engine import special_tokens_of, unique_ids
from backends.exllama.sizing import rope_alpha
from common.errors import BadRequestError

# Rows of logits per forward pass: enough for max_q_size (8) plus a draft; TabbyAPI uses 16 too.
MAX_OUTPUT_LEN = 16


@dataclass
class ModelConfig:
    config: Any
    native_max_seq_len: int
    rope_alpha: float


def read_config(
    path: Path,
    *,
    max_seq_len: int | None,
    rope_scale: float,
    rope_alpha_setting: float | str | None,
    chunk_size: int,
    flash_attn: bool,
) -> ModelConfig:
    """``ExLlamaV2Config`` for ``path`` with the runtime fields set after ``prepare()``.

    ``prepare()`` overwrites ``max_seq_len`` from config.json, so everything is set after it.
    Without flash-attn, ExLlamaV2 0.3.2's torch SDPA path is not causal for multi-token passes
    (prefill chunks, draft verification), so SDPA is turned off (docs/exllama.md, section 2).
    """
    from exllamav2 import ExLlamaV2Config

    try:
        config = ExLlamaV2Config(str(path))
    except Exception as exc:
        raise BadRequestError(f"ExLlamaV2 cannot read {path.name}: {exc}") from exc
    native = config.max_seq_len
    target = native if max_seq_len in (None, 0, -1) else max_seq_len
    alpha = rope_alpha(rope_alpha_setting, target, native)
    config.max_seq_len = target
    config.scale_pos_emb = rope_scale
    config.scale_alpha_value = alpha
    config.max_input_len = chunk_size
    config.max_attention_size = chunk_size**2
    config.max_output_len = MAX_OUTPUT_LEN
    config.arch_compat_overrides(quiet=True)
    if not flash_attn:
        config.no_flash_attn = True
        config.no_sdpa = True
    return ModelConfig(config, native, alpha)


def special_tokens(config: Any, tokenizer: Any) -> SpecialTokens:
    """EOS ids from config.json, generation_config.json and the tokenizer, and the rest."""
    generation = getattr(config, "generation_config", None) or {}
    eos_ids = unique_ids(
        config.eos_token_id, generation.get("eos_token_id"), tokenizer.eos_token_id
    )
    return special_tokens_of(tokenizer, tokenizer.tokenizer_model.hf_tokenizer, eos_ids)


def read_tokenizer(config: Any) -> Any:
    from exllamav2 import ExLlamaV2Tokenizer

    try:
        return ExLlamaV2Tokenizer(config)
    except Exception as exc:
        raise BadRequestError(f"ExLlamaV2 cannot read the tokenizer: {exc}") from exc
