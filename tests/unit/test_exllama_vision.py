"""The ExLlama engines' side of images, on a CPU: the template's image tokens become the ids of
the library's embedding object, kept per image, and the job gets the objects. ExLlamaV2's real
Python code runs over the STUB of its CUDA extension (tests/support/exllamav2_stub.py); its
vision tower runs CUDA kernels, so a STUB tower stands in for it (tests/gpu/ runs the real one)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from backends.base import GenerationRequest, LoadOptions
from backends.exllama import vision
from backends.exllama.vision import ImageEmbeddings, template_image_run
from backends.images import splice_images
from backends.sampling import SamplingParams
from common.config import LimitsConfig
from common.errors import BadRequestError, UnsupportedError
from common.images import check_image
from tests.support.image_host import png
from tests.support.tiny_model import build_tiny_exllama_model
from tests.support.tiny_vlm import build_tiny_pixtral

RED = check_image(png((255, 0, 0)), LimitsConfig())
BLUE = check_image(png((0, 0, 255)), LimitsConfig())


def test_each_run_of_image_tokens_is_replaced_by_its_images_ids() -> None:
    run = (7, 8, 9)  # start, pad, end: what a Qwen2-VL template writes
    prompt = [1, 7, 8, 9, 5, 7, 8, 9, 6]
    assert splice_images(prompt, run, [[100, 101], [200]]) == [1, 100, 101, 5, 200, 6]
    with pytest.raises(BadRequestError, match="2 image placeholders for 1 images"):
        splice_images(prompt, run, [[100]])
    with pytest.raises(BadRequestError, match="0 image placeholders"):
        splice_images([1, 7, 8, 5], run, [[100]])  # a run cut short is no placeholder


def test_the_models_image_run_is_found_in_its_vocabulary() -> None:
    def vocabulary(*tokens: str) -> Any:
        return {token: 10 + index for index, token in enumerate(tokens)}.get

    qwen = vocabulary("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "[IMG]")
    assert template_image_run(qwen) == (10, 11, 12)
    assert template_image_run(vocabulary("<start_of_image>")) == (10,)
    assert template_image_run(vocabulary("[IMG]", "[IMG_BREAK]")) == (10,)
    assert template_image_run(vocabulary("<image>")) is None


@pytest.fixture(scope="module")
def exllamav2() -> Any:
    from tests.support.exllamav2_stub import import_exllamav2

    return import_exllamav2()


def stub_tower(made: list[Any]) -> tuple[Any, Any]:
    """STUB of the vision tower's get_image_embeddings: a real ExLlamaV2MMEmbedding (its ids
    come from exllamav2's own allocator) of 4 feature rows, the picture's mean colour."""
    from exllamav2.generator import ExLlamaV2MMEmbedding

    model = SimpleNamespace(config=SimpleNamespace(hidden_size=8))

    def embed(image: Any) -> Any:
        mean = float(torch.tensor(list(image.getdata()), dtype=torch.float).mean())
        made.append(ExLlamaV2MMEmbedding(model=model, embeddings=torch.full((4, 8), mean)))
        return made[-1]

    return embed, lambda embedding: list(embedding.get_ids())


def test_images_keep_their_ids_while_cached_and_differ_from_each_other(
    exllamav2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vision, "CACHED_IMAGES", 2)
    made: list[Any] = []
    images = ImageEmbeddings(*stub_tower(made), run=(5,))
    red = images.expand([1, 5, 2], [RED])
    assert len(red) == 6 and red[1] >= 10**9  # the embedding's own ids, beyond any vocabulary
    assert images.expand([1, 5, 2], [RED]) == red and len(made) == 1  # made once
    blue = images.expand([5, 5], [BLUE, RED])
    assert blue[:4] != red[1:5] and blue[4:] == red[1:5]
    third = check_image(png((0, 255, 0)), LimitsConfig())
    images.expand([5], [third])  # the least recently used (blue) goes
    assert len(made) == 3
    assert images.for_job([BLUE])[0] is not made[1]  # made again when needed
    images.clear()
    assert images.for_job([RED])[0] is not made[0]


@pytest.fixture(scope="module")
def engine(exllamav2: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from backends.exllamav2.engine import ExLlamaV2Engine

    folder = build_tiny_exllama_model(tmp_path_factory.mktemp("exl2-vision") / "tiny")
    engine = ExLlamaV2Engine(LoadOptions(path=folder, name="tiny", vision=True))
    engine.read_model_files()
    return engine


def test_a_text_model_loaded_with_vision_refuses_images(engine: Any) -> None:
    engine._load_vision()  # config.vision_model_type is None: no tower
    assert engine.images is None and not engine.info().vision
    with pytest.raises(UnsupportedError, match="does not take images"):
        asyncio.run(engine.prepare_images([1, 2], [RED]))


def test_the_job_gets_the_embeddings_of_its_images(engine: Any) -> None:
    made: list[Any] = []
    run = engine.encode("<|im_end|>")  # the run this test has the template write
    engine.images = ImageEmbeddings(*stub_tower(made), run=tuple(run))
    try:
        assert engine.info().vision
        prompt = engine.encode("<|im_start|>user\n<|im_end|>Hi")
        ids = asyncio.run(engine.prepare_images(prompt, [RED]))
        place = prompt.index(run[0])
        assert ids == prompt[:place] + made[0].get_ids() + prompt[place + 1 :]
        request = GenerationRequest("req", ids, SamplingParams(), max_new_tokens=4, images=(RED,))
        job = engine.build_job(request, 4)
        assert job.embeddings == [made[0]]
        text_only = replace(request, images=(), prompt_ids=prompt)
        assert engine.build_job(text_only, 4).embeddings in (None, [])
    finally:
        engine.images = None


def test_exllamav2_reads_a_tiny_pixtral_with_its_vision_tower(
    exllamav2: Any, tmp_path: Path
) -> None:
    """The folder tests/gpu/test_vision_gpu.py loads on a GPU: ExLlamaV2 reads its config and
    weight names and builds its vision tower's modules (loading them needs CUDA), and the
    engine finds Pixtral's [IMG] as the template's image token."""
    from exllamav2 import ExLlamaV2VisionTower

    from backends.exllamav2.engine import ExLlamaV2Engine

    folder = build_tiny_pixtral(tmp_path / "pixtral")
    engine = ExLlamaV2Engine(LoadOptions(path=folder, name="pixtral", vision=True))
    engine.read_model_files()
    assert engine.config.vision_model_type == "pixtral"
    assert ExLlamaV2VisionTower(engine.config).modules
    run = template_image_run(engine._plain_tokenizer.token_to_id)
    assert run == tuple(engine.encode("[IMG]"))
