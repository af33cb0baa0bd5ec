"""Images in chats: a tiny random vision-language model (LLaVA, built offline) on the real server,
through the official openai and anthropic SDKs; a model without vision refuses images."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.support.image_host import image_host, png
from tests.support.server import API_KEY, ServerProcess

RED, BLUE = png((255, 0, 0)), png((0, 0, 255))


def data_uri(image: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(image).decode()}"


@pytest.fixture(scope="module")
def vlm_server(tmp_path_factory: pytest.TempPathFactory, tiny_vlm: Path) -> Iterator[ServerProcess]:
    """The server with the tiny VLM loaded with vision; it may fetch loopback image URLs (the
    test's own image host) and takes at most two images per request."""
    config = {
        "network": {"allow_private_image_urls": True, "api_servers": ["OAI", "Kobold"]},
        "model": {"model_dir": str(tiny_vlm.parent), "model_name": "tiny-vlm", "vision": True},
        "limits": {"max_images": 2, "image_fetch_timeout": 2},
    }
    process = ServerProcess(tmp_path_factory.mktemp("vlm-server"), config).start()
    yield process
    process.stop()


def _client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)


def _ask(server: ServerProcess, url: str, text: str = "What is this?") -> str:
    answer = _client(server).chat.completions.create(
        model="tiny-vlm",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": text},
                ],
            }
        ],
        max_tokens=8,
        temperature=0,
    )
    assert answer.usage is not None and answer.usage.prompt_tokens > 16  # the image's 16 tokens
    return answer.choices[0].message.content or ""


def test_the_answer_depends_on_the_image(vlm_server: ServerProcess) -> None:
    red = _ask(vlm_server, data_uri(RED))
    assert red == _ask(vlm_server, data_uri(RED))
    assert red != _ask(vlm_server, data_uri(BLUE))


def test_an_image_url_is_fetched_and_read_like_its_data_uri(vlm_server: ServerProcess) -> None:
    with image_host(BLUE) as host:
        assert _ask(vlm_server, f"{host}/image.png") == _ask(vlm_server, data_uri(BLUE))
        with pytest.raises(openai.BadRequestError, match="redirected more than"):
            _ask(vlm_server, f"{host}/hop/9")
        with pytest.raises(openai.BadRequestError, match="longer than"):
            _ask(vlm_server, f"{host}/slow")


def test_bad_images_are_refused_with_a_400(vlm_server: ServerProcess) -> None:
    with pytest.raises(openai.BadRequestError, match="invalid base64"):
        _ask(vlm_server, "data:image/png;base64,@@@")
    with pytest.raises(openai.BadRequestError, match="not a picture"):
        _ask(vlm_server, data_uri(b"plain text, not a picture"))
    three = [{"type": "image_url", "image_url": {"url": data_uri(RED)}}] * 3
    with pytest.raises(openai.BadRequestError, match="At most 2 images"):
        _client(vlm_server).chat.completions.create(
            model="tiny-vlm", messages=[{"role": "user", "content": three}], max_tokens=2
        )


def test_the_model_card_says_vision_is_loaded(
    vlm_server: ServerProcess, server: ServerProcess
) -> None:
    for process, vision in ((vlm_server, True), (server, False)):
        card = process.client().get("/v1/model").json()
        assert card["parameters"]["use_vision"] is vision


def test_anthropic_and_responses_images_reach_the_model_the_same_way(
    vlm_server: ServerProcess,
) -> None:
    expected = _ask(vlm_server, data_uri(RED), "Describe it.")
    source = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(RED).decode()}
    message = anthropic.Anthropic(
        base_url=vlm_server.url, api_key=API_KEY, max_retries=0
    ).messages.create(
        model="tiny-vlm",
        max_tokens=8,
        extra_body={"temperature": 0},  # the SDK has no temperature argument; Serval takes one
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": source},  # type: ignore[typeddict-item]
                    {"type": "text", "text": "Describe it."},
                ],
            }
        ],
    )
    assert "".join(b.text for b in message.content if b.type == "text") == expected
    response = _client(vlm_server).responses.create(
        model="tiny-vlm",
        max_output_tokens=8,
        temperature=0,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": data_uri(RED), "detail": "auto"},
                    {"type": "input_text", "text": "Describe it."},
                ],
            }
        ],
    )
    assert response.output_text == expected


def test_kobold_and_completion_images_are_refused(vlm_server: ServerProcess) -> None:
    with vlm_server.client() as client:
        kobold = client.post(
            "/api/v1/generate", json={"prompt": "Hi", "max_length": 2, "images": ["aGk="]}
        )
        assert kobold.status_code == 400 and "images" in kobold.text
        assert (
            client.post(
                "/api/v1/generate", json={"prompt": "Hi", "max_length": 2, "images": []}
            ).status_code
            == 200
        )
        completion = client.post(
            "/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "images": [data_uri(RED)]}
        )
        assert completion.status_code == 400 and "images" in completion.text


def test_a_model_without_vision_refuses_image_parts(server: ServerProcess) -> None:
    with pytest.raises(openai.BadRequestError, match="does not take images"):
        _ask(server, data_uri(RED))
