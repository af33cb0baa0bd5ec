"""The transformers engine with a vision model (a tiny random LLaVA): image tokens in the prompt,
features written at their places, chunked prefill and batching as for text, the cache of
image features bounded and freed on unload."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.base import ImageInput, LoadOptions
from backends.sampling import SamplingParams
from backends.transformers import vision
from backends.transformers.engine import TransformersEngine
from common.config import LimitsConfig
from common.errors import BadRequestError, UnsupportedError
from common.generation import JobOptions, build_request, collect
from common.images import check_image
from tests.support.image_host import png
from tests.support.tiny_vlm import IMAGE_TOKEN

GREEDY = SamplingParams(temperature=0, max_tokens=6, min_tokens=6)
PROMPT = f"<|im_start|>user\n{IMAGE_TOKEN}What is it?<|im_end|>\n<|im_start|>assistant\n"
RED = check_image(png((255, 0, 0)), LimitsConfig())
BLUE = check_image(png((0, 0, 255)), LimitsConfig())


def _load(path: Path, **options: object) -> TransformersEngine:
    engine = TransformersEngine(
        LoadOptions(path=path, name="tiny-vlm", dtype="float32", **options)  # type: ignore[arg-type]
    )

    async def load() -> None:
        async for _ in engine.load():
            pass

    asyncio.run(load())
    return engine


@pytest.fixture(scope="module")
def engine(tiny_vlm: Path) -> Iterator[TransformersEngine]:
    engine = _load(tiny_vlm, vision=True, chunk_size=8)  # prompts prefilled 8 tokens a pass
    yield engine
    asyncio.run(engine.unload())


async def _answer(
    engine: TransformersEngine, images: list[ImageInput], text: str = PROMPT
) -> list[int]:
    ids = await engine.prepare_images(engine.encode(text), images)
    options = JobOptions(images=tuple(images))
    request = build_request(engine, "t", ids, GREEDY, LimitsConfig(), options)
    return (await collect(engine, request)).token_ids


def test_each_image_becomes_its_tokens_and_the_answer_depends_on_it(
    engine: TransformersEngine,
) -> None:
    async def answers() -> tuple[list[int], ...]:
        ids = await engine.prepare_images(engine.encode(PROMPT), [RED])
        assert len(ids) == len(engine.encode(PROMPT)) - 1 + 16  # a 32x32 picture: 16 patches
        return await asyncio.gather(
            _answer(engine, [RED]), _answer(engine, [BLUE]), _answer(engine, [RED])
        )

    red, blue, red_again = asyncio.run(answers())
    assert red == red_again and red != blue
    assert engine.info().vision


def test_chunked_prefill_and_a_shared_batch_give_what_one_pass_alone_gives(
    engine: TransformersEngine, tiny_vlm: Path
) -> None:
    whole = _load(tiny_vlm, vision=True)  # the prompt in one pass
    try:
        alone = asyncio.run(_answer(whole, [RED, BLUE], PROMPT.replace("it?", f"{IMAGE_TOKEN}?")))
    finally:
        asyncio.run(whole.unload())

    async def beside_text() -> list[int]:
        text = build_request(engine, "x", engine.encode("A class"), GREEDY, LimitsConfig())
        both = await asyncio.gather(
            _answer(engine, [RED, BLUE], PROMPT.replace("it?", f"{IMAGE_TOKEN}?")),
            collect(engine, text),
        )
        return both[0]

    assert asyncio.run(beside_text()) == alone


def test_placeholders_must_match_the_images(engine: TransformersEngine) -> None:
    with pytest.raises(BadRequestError, match="1 image placeholders for 2 images"):
        asyncio.run(engine.prepare_images(engine.encode(PROMPT), [RED, BLUE]))


def test_image_features_are_cached_per_image_bounded_and_freed_on_unload(
    tiny_vlm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vision, "CACHED_IMAGES", 2)
    engine = _load(tiny_vlm, vision=True)
    colors = [check_image(png((i, 0, 0)), LimitsConfig()) for i in range(3)]
    ids = engine.encode(PROMPT)
    for image in [*colors, colors[2]]:
        asyncio.run(engine.prepare_images(ids, [image]))
    inputs = engine._vision
    assert inputs is not None
    assert list(inputs._cache) == [colors[1].digest, colors[2].digest]
    asyncio.run(engine.unload())
    assert not inputs._cache and engine._vision is None


def test_without_vision_the_model_answers_text_and_refuses_images(tiny_vlm: Path) -> None:
    engine = _load(tiny_vlm)
    try:
        assert not engine.info().vision
        request = build_request(engine, "t", engine.encode("A class"), GREEDY, LimitsConfig())
        assert len(asyncio.run(collect(engine, request)).token_ids) == 6
        with pytest.raises(UnsupportedError, match="does not take images"):
            asyncio.run(engine.prepare_images(engine.encode(PROMPT), [RED]))
    finally:
        asyncio.run(engine.unload())
