"""Images for the ExLlama engines, through the library's own vision tower.

Both libraries turn a picture into a multimodal embedding object (``get_image_embeddings``) that
holds the image features *and* the model's wrapper tokens around them (a start and an end token,
row breaks), under a range of token ids of its own (from 10^9 up, unique in the process). A job
whose prompt holds those ids and that is given the embedding objects reads the image there. So
the run of tokens the HF chat template wrote for an image is replaced by the embedding's ids;
the generator's prompt cache keys on token ids, and two different images never share ids, while
one image kept here (per content digest, bounded) keeps its ids and its cached prefix.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from backends.base import ImageInput
from backends.images import splice_images

CACHED_IMAGES = 32
# What an HF chat template writes for one image, by model family; the first run whose tokens
# are all in the vocabulary is the model's. The library's embedding carries the wrappers.
TEMPLATE_IMAGE_RUNS: tuple[tuple[str, ...], ...] = (
    ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>"),  # Qwen2-VL, Qwen2.5-VL, Qwen3-VL
    ("<start_of_image>",),  # Gemma 3
    ("[IMG]",),  # Pixtral, Mistral 3
)


def template_image_run(token_id: Callable[[str], int | None]) -> tuple[int, ...] | None:
    """The ids of the model's image run (``token_id``: a token's id, None when it has none)."""
    for run in TEMPLATE_IMAGE_RUNS:
        ids = [token_id(token) for token in run]
        if all(i is not None for i in ids):
            return tuple(i for i in ids if i is not None)
    return None


class ImageEmbeddings:
    """The embedding objects of the images seen so far, made by ``embed(PIL image)``; the
    ids each one stands for in a prompt are ``ids_of(embedding)``."""

    def __init__(
        self, embed: Callable[[Any], Any], ids_of: Callable[[Any], list[int]], run: tuple[int, ...]
    ) -> None:
        self._embed = embed
        self._ids_of = ids_of  # the prompt ids an embedding object stands for
        self.run = run
        self._cache: OrderedDict[str, Any] = OrderedDict()

    def embedding(self, image: ImageInput) -> Any:
        """``image``'s embedding: kept, or made now (blocking: the vision tower runs)."""
        found = self._cache.get(image.digest)
        if found is None:
            from PIL import Image

            with Image.open(io.BytesIO(image.data)) as opened:
                found = self._embed(opened.convert("RGB"))
            self._cache[image.digest] = found
            while len(self._cache) > CACHED_IMAGES:
                self._cache.popitem(last=False)
        self._cache.move_to_end(image.digest)
        return found

    def expand(self, prompt_ids: list[int], images: Sequence[ImageInput]) -> list[int]:
        embeddings = [self.embedding(image) for image in images]
        return splice_images(prompt_ids, self.run, [self._ids_of(e) for e in embeddings])

    def for_job(self, images: Sequence[ImageInput]) -> list[Any]:
        """The embedding objects a job with ``images`` needs (made again if dropped since)."""
        return [self.embedding(image) for image in images]

    def clear(self) -> None:
        self._cache.clear()
