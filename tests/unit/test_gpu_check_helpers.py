"""What scripts/gpu_check.py can show without a GPU: its comparisons, its model and its LoRA."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.support.scripts import import_script


@pytest.fixture(scope="module")
def check() -> ModuleType:
    return import_script("gpu_check")


def test_logits_within_fp16_tolerance_pass_and_a_real_difference_fails(check: ModuleType) -> None:
    reference = torch.linspace(-8, 8, 300)
    close = check.compare_logits(reference + 0.03, reference)
    assert close.ok and close.tolerance == pytest.approx(0.09)
    far = check.compare_logits(reference + torch.randn(300) * 0.5, reference)
    assert not far.ok
    swapped = reference.clone()
    swapped[0] = 9.0  # a different argmax fails even when the error is small elsewhere
    assert not check.compare_logits(swapped, reference).ok
    padded = check.compare_logits(torch.cat([reference, torch.full((20,), 99.0)]), reference)
    assert padded.ok  # the engine's padding columns are not compared


def test_greedy_comparison_allows_only_near_ties(check: ModuleType) -> None:
    logits = [torch.zeros(10) for _ in range(3)]
    logits[1][4], logits[1][5] = 2.0, 1.995  # a near-tie between 4 and 5 at step 1
    assert check.compare_greedy([1, 5, 9], [1, 4, 3], logits).ok
    logits[1][5] = 1.0
    report = check.compare_greedy([1, 5, 9], [1, 4, 3], logits)
    assert not report.ok and report.first_difference == 1
    assert check.compare_greedy([1, 4, 3], [1, 4, 3], logits).first_difference is None


def test_the_check_model_fits_exllamav2_and_its_lora_loads_in_peft(
    check: ModuleType, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model_dir = check.build_check_model(tmp_path)
    config = json.loads((model_dir / "config.json").read_text())
    dims = (
        config["hidden_size"],
        config["intermediate_size"],
        config["num_attention_heads"] * config["head_dim"],
        config["num_key_value_heads"] * config["head_dim"],
    )
    assert all(d % 32 == 0 for d in dims) and config["head_dim"] in (64, 128)
    assert config["dtype"] == "float16"
    lora_dir = check.build_lora(tmp_path / "lora", model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompt = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode():
        plain = base(input_ids=prompt).logits[0, -1]
        adapted = PeftModel.from_pretrained(base, lora_dir)(input_ids=prompt).logits[0, -1]
    assert (plain - adapted).abs().max() > 0.05  # the adapter changes what the model says
