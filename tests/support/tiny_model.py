"""Tiny random Llama models built offline in seconds, for fast tests.

A byte-level BPE tokenizer is trained on text from Python's own documentation (shipped with the
standard library), and a ``LlamaForCausalLM`` with random weights is saved beside it with a
ChatML chat template. Every projection dimension is a multiple of 32, as ExLlamaV2 needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def corpus() -> list[str]:
    from pydoc_data import topics

    return list(topics.topics.values())


def build_tokenizer(target: Path, vocab_size: int = 512) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus(), trainer)
    tokenizer.save(str(target / "tokenizer.json"))
    config = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "</s>",
        "add_bos_token": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHATML,
    }
    (target / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return tokenizer.get_vocab_size()


def build_tiny_model(
    target: Path,
    seed: int = 0,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    head_dim: int | None = None,
    max_position_embeddings: int = 512,
    dtype: str = "float32",
    initializer_range: float = 0.02,
) -> Path:
    """Write a tiny random Llama model folder at ``target`` and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    target.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(target)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim or hidden_size // heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=False,
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(target)
    return target


def build_tiny_exllama_model(target: Path, **sizes: Any) -> Path:
    """An fp16 Llama that the ExLlama engines accept (projections multiples of 32, head_dim
    64), written at ``target``: the smallest, or with ``sizes`` (arguments of
    :func:`build_tiny_model`) a larger one."""
    smallest = {"hidden_size": 128, "intermediate_size": 256, "heads": 2, "kv_heads": 2}
    return build_tiny_model(target, **{**smallest, **sizes}, head_dim=64, dtype="float16")
