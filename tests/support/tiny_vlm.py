"""Tiny random vision-language models built offline: a LLaVA (a CLIP vision tower and a Llama)
for the transformers engine, and a Pixtral-LLaVA in the layout ExLlamaV2 reads.

The tokenizer is the tiny text models' one with an ``<image>`` token added; the processor is
transformers' own ``LlavaProcessor`` (a CLIP image processor at 32x32 pixels, 8-pixel patches:
16 image tokens per image) and the chat template writes ``<image>`` where a message has an
``{"type": "image"}`` content item, as HF chat templates for vision models do.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.tiny_model import build_tokenizer

IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 32
PATCH_SIZE = 8
VISION_CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tiny_vlm(target: Path, seed: int = 0) -> Path:
    """Write a tiny random LLaVA folder (weights, tokenizer, processor) at ``target``."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    target.mkdir(parents=True, exist_ok=True)
    build_tokenizer(target)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(target)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VISION_CHATML,
    )
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(torch.float32)
    model.save_pretrained(target)
    processor.save_pretrained(target)
    return target


PIXTRAL_TOKENS = ["[IMG]", "[IMG_BREAK]", "[IMG_END]"]
# Old transformers' LLaVA key layout, which ExLlamaV2 reads; transformers 5 saves the new one.
_OLD_LLAVA_KEYS = (
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
)


def build_tiny_pixtral(target: Path, seed: int = 0) -> Path:
    """A tiny random Pixtral (LLaVA with a Pixtral vision tower and a Mistral) at ``target``,
    fp16, in the layout ExLlamaV2 loads: old LLaVA weight names, ``rope_theta`` at the top of
    each config part, and a ``preprocessor_config.json`` (64-pixel images, 16-pixel patches).
    The tokenizer has Pixtral's image tokens; the prompt writes ``[IMG]`` for an image."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import (
        LlavaConfig,
        LlavaForConditionalGeneration,
        MistralConfig,
        PixtralVisionConfig,
        PreTrainedTokenizerFast,
    )

    target.mkdir(parents=True, exist_ok=True)
    build_tokenizer(target)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(target)
    tokenizer.add_special_tokens({"additional_special_tokens": PIXTRAL_TOKENS})
    tokenizer.save_pretrained(target)
    vision = PixtralVisionConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        head_dim=64,
        image_size=64,
        patch_size=16,
    )
    text = MistralConfig(
        vocab_size=(len(tokenizer) + 31) // 32 * 32,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("[IMG]"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        multimodal_projector_bias=True,
    )
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).to(torch.float16).save_pretrained(target)
    weights = target / "model.safetensors"
    renamed = {}
    for key, tensor in load_file(weights).items():
        for new, old in _OLD_LLAVA_KEYS:
            if key.startswith(new):
                key = old + key.removeprefix(new)
                break
        renamed[key] = tensor.contiguous()
    save_file(renamed, weights, metadata={"format": "pt"})
    written = json.loads((target / "config.json").read_text())
    written["vision_config"]["rope_theta"] = 10000
    written["text_config"]["rope_theta"] = 1000000.0
    (target / "config.json").write_text(json.dumps(written, indent=2))
    preprocessor = {
        "image_processor_type": "PixtralImageProcessor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "patch_size": {"height": 16, "width": 16},
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"longest_edge": 64},
    }
    (target / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return target
