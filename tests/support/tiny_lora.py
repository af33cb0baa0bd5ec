"""Tiny LoRA adapters for the tiny random models, made offline with PEFT in a second.

The adapter targets ``q_proj`` and ``v_proj`` and is initialised randomly (not the usual zero
``B`` matrix), so applying it changes what the model says.
"""

from __future__ import annotations

from pathlib import Path


def build_tiny_lora(
    model_dir: Path,
    target: Path,
    seed: int = 0,
    rank: int = 8,
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
) -> Path:
    """Write a random LoRA adapter for the model at ``model_dir`` into ``target``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    config = LoraConfig(
        r=rank,
        lora_alpha=4 * rank,
        target_modules=list(targets),
        init_lora_weights=False,
    )
    torch.manual_seed(seed)
    get_peft_model(model, config).save_pretrained(target)
    return target
