"""Vision on a CUDA device: the transformers engine with the tiny random LLaVA reads images on
the GPU (the same image twice gives the same greedy tokens, two images different ones).

Not covered here yet: ExLlamaV2's and ExLlamaV3's vision towers need a vision model folder in
the layout those libraries read (docs/vision.md); the Serval side of them is checked on the CPU
in tests/unit/test_exllama_vision.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

from backends.base import LoadOptions
from backends.sampling import SamplingParams
from backends.transformers.engine import TransformersEngine
from common.config import LimitsConfig
from common.generation import JobOptions, build_request, collect
from common.images import check_image
from tests.support.image_host import png
from tests.support.tiny_vlm import IMAGE_TOKEN

PROMPT = f"<|im_start|>user\n{IMAGE_TOKEN}What is it?<|im_end|>\n<|im_start|>assistant\n"
GREEDY = SamplingParams(temperature=0, max_tokens=6, min_tokens=6)
COLORS = ((255, 0, 0), (0, 0, 255), (255, 0, 0))


async def _answers(path: Path) -> tuple[str, list[list[int]]]:
    engine = TransformersEngine(LoadOptions(path=path, name="tiny-vlm", vision=True))
    async for _ in engine.load():
        pass
    try:
        answers = []
        for color in COLORS:
            image = check_image(png(color), LimitsConfig())
            ids = await engine.prepare_images(engine.encode(PROMPT), [image])
            options = JobOptions(images=(image,))
            request = build_request(engine, "g", ids, GREEDY, LimitsConfig(), options)
            answers.append((await collect(engine, request)).token_ids)
        return engine.device.type, answers
    finally:
        await engine.unload()


def test_images_are_read_on_the_gpu(tiny_vlm: Path) -> None:
    device, (red, blue, red_again) = asyncio.run(_answers(tiny_vlm))
    assert device == "cuda"
    assert red == red_again and red != blue
