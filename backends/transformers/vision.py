"""Images for a vision-language model on the transformers engine, through its own processor.

The model folder's processor (``AutoProcessor``) turns one image into pixel values and into the
tokens its placeholder stands for; the model's ``get_image_features`` turns the pixels into one
embedding per image token. A prompt with images is then prefilled from input embeddings: the
text's token embeddings with the image features written at the image-token positions (what
the model's own forward does with ``pixel_values``), so the engine's batching, chunked prefill
and K/V cache stay as they are for text. Each image's tokens and features are kept per content
digest (a bounded LRU) for the life of the load; everything here runs on the compute thread.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from backends.base import ImageInput
from backends.images import splice_images
from common.errors import BadRequestError

# Images whose tokens and features are kept; a request with more is still served (they are
# computed again when they are needed).
CACHED_IMAGES = 32
# Processor outputs that describe the text, not the image.
_TEXT_KEYS = frozenset({"input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids"})


def is_vision_config(config: Any) -> bool:
    """Whether a model config is a vision-language model's (it has a vision tower)."""
    return getattr(config, "vision_config", None) is not None


def uses_mrope(config: Any) -> bool:
    """Models with multimodal rotary positions (Qwen2-VL and its kin) need position ids that
    only their own ``generate`` computes; the engine refuses to load their vision part."""
    text = config.get_text_config()
    for name in ("rope_scaling", "rope_parameters"):
        rope = getattr(text, name, None)
        if isinstance(rope, dict) and "mrope_section" in rope:
            return True
    return False


@dataclass
class EncodedImage:
    """One image as the model reads it: its token ids and one feature row per image token."""

    ids: list[int]
    features: torch.Tensor


class VisionInputs:
    """The processor and model of one load, and the images seen so far."""

    def __init__(self, processor: Any, model: Any, device: torch.device) -> None:
        self.processor = processor
        self.model = model
        self.device = device
        self.placeholder = int(processor.image_token_id)
        config = model.config
        token = getattr(config, "image_token_id", None)
        self.image_token = int(token if token is not None else config.image_token_index)
        self._cache: OrderedDict[str, EncodedImage] = OrderedDict()

    def clear(self) -> None:
        self._cache.clear()

    def encoded(self, image: ImageInput) -> EncodedImage:
        """``image``'s tokens and features, from the cache or computed now."""
        found = self._cache.get(image.digest)
        if found is not None:
            self._cache.move_to_end(image.digest)
            return found
        encoded = self._encode(image)
        self._cache[image.digest] = encoded
        while len(self._cache) > CACHED_IMAGES:
            self._cache.popitem(last=False)
        return encoded

    @torch.inference_mode()
    def _encode(self, image: ImageInput) -> EncodedImage:
        from PIL import Image

        with Image.open(io.BytesIO(image.data)) as opened:
            picture = opened.convert("RGB")
        inputs = self.processor(
            text=[self.processor.image_token],
            images=[picture],
            return_tensors="pt",
            add_special_tokens=False,
        )
        ids = [int(i) for i in inputs["input_ids"][0]]
        pixels = {
            key: value.to(self.device) if isinstance(value, torch.Tensor) else value
            for key, value in inputs.items()
            if key not in _TEXT_KEYS
        }
        dtype = self.model.get_input_embeddings().weight.dtype
        if "pixel_values" in pixels:
            pixels["pixel_values"] = pixels["pixel_values"].to(dtype)
        output = self.model.get_image_features(**pixels, return_dict=True)
        pooled = output.pooler_output
        features = torch.cat(list(pooled), dim=0) if not torch.is_tensor(pooled) else pooled
        features = features.reshape(-1, features.shape[-1]).to(dtype)
        if features.shape[0] != ids.count(self.image_token):
            raise BadRequestError(
                f"The model's processor gave {ids.count(self.image_token)} image tokens for "
                f"{features.shape[0]} image features: this model's vision part is not supported.",
                param="messages",
            )
        return EncodedImage(ids, features)

    def expand(self, prompt_ids: list[int], images: Sequence[ImageInput]) -> list[int]:
        """``prompt_ids`` with each image placeholder replaced by its image's tokens."""
        return splice_images(
            prompt_ids, [self.placeholder], [self.encoded(image).ids for image in images]
        )

    @torch.inference_mode()
    def prompt_embeds(self, prompt_ids: list[int], images: Sequence[ImageInput]) -> torch.Tensor:
        """The input embeddings of an expanded prompt: ``[1, len(prompt_ids), hidden]``."""
        ids = torch.tensor([prompt_ids], device=self.device)
        embeds: torch.Tensor = self.model.get_input_embeddings()(ids)
        features = torch.cat([self.encoded(image).features for image in images])
        mask = ids[0] == self.image_token
        if int(mask.sum()) != features.shape[0]:
            raise BadRequestError(
                "The prompt's image tokens do not match its images.", param="messages"
            )
        embeds[0, mask] = features.to(embeds.device, embeds.dtype)
        return embeds
