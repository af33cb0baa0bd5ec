"""Vision on a CUDA device: the transformers engine with the tiny random LLaVA, and ExLlamaV2's
vision tower with a tiny random Pixtral, read images on the GPU (the same image twice gives the
same greedy tokens, two images different ones).

Not covered yet: ExLlamaV3's vision component (it needs a folder of an architecture it defines
one for; the Serval side is checked on the CPU in tests/unit/test_exllama_vision.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from backends.base import Engine, LoadOptions
from backends.sampling import SamplingParams
from backends.transformers.engine import TransformersEngine
from common.config import LimitsConfig
from common.generation import JobOptions, build_request, collect
from common.images import check_image
from tests.support.image_host import png
from tests.support.tiny_vlm import IMAGE_TOKEN, build_tiny_pixtral

PROMPT = f"<|im_start|>user\n{IMAGE_TOKEN}What is it?<|im_end|>\n<|im_start|>assistant\n"
GREEDY = SamplingParams(temperature=0, max_tokens=6, min_tokens=6)
COLORS = ((255, 0, 0), (0, 0, 255), (255, 0, 0))


async def _answers(engine: Engine, prompt: str = PROMPT) -> list[list[int]]:
    async for _ in engine.load():
        pass
    try:
        answers = []
        for color in COLORS:
            image = check_image(png(color), LimitsConfig())
            ids = await engine.prepare_images(engine.encode(prompt), [image])
            options = JobOptions(images=(image,))
            request = build_request(engine, "g", ids, GREEDY, LimitsConfig(), options)
            answers.append((await collect(engine, request)).token_ids)
        assert engine.info().vision
        return answers
    finally:
        await engine.unload()


def test_the_transformers_engine_reads_images_on_the_gpu(tiny_vlm: Path) -> None:
    engine = TransformersEngine(LoadOptions(path=tiny_vlm, name="tiny-vlm", vision=True))
    assert engine.device.type == "cuda"
    red, blue, red_again = asyncio.run(_answers(engine))
    assert red == red_again and red != blue


def test_exllamav2_reads_images_through_its_vision_tower(tmp_path: Path) -> None:
    from backends.exllamav2.engine import ExLlamaV2Engine

    folder = build_tiny_pixtral(tmp_path / "pixtral")
    engine = ExLlamaV2Engine(
        LoadOptions(path=folder, name="pixtral", vision=True, max_seq_len=1024)
    )
    red, blue, red_again = asyncio.run(_answers(engine, PROMPT.replace(IMAGE_TOKEN, "[IMG]")))
    assert red == red_again and red != blue
