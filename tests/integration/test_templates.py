"""Chat templates: errors reported as 400s, runaway templates stopped (switching templates is in
tests/conformance/)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess, start_with_templates

TEMPLATES = {
    "tiny-raise": "{{ raise_exception('System messages are not supported by this model') }}",
    "tiny-loop": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "tiny-attr": "{{ messages.__class__.__mro__[1].__subclasses__() }}",
    "tiny-undefined": "{{ messages[0].content.upper(1, 2, 3) }}",
}
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def template_server(
    tiny_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    process = start_with_templates(
        tiny_models / "tiny-a", TEMPLATES, "tiny-a", tmp_path_factory.mktemp("template-server")
    )
    yield process
    process.stop()


def _use(server: ServerProcess, name: str) -> None:
    with (
        server.admin() as admin,
        admin.stream("POST", "/v1/model/load", json={"model_name": name}) as r,
    ):
        assert r.status_code == 200
        r.read()


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("tiny-raise", "System messages are not supported"),
        ("tiny-loop", "longer than"),
        ("tiny-attr", "Template error"),
        ("tiny-undefined", "Template error"),
    ],
)
def test_template_problems_are_400_and_the_server_keeps_serving(
    template_server: ServerProcess, model: str, words: str
) -> None:
    _use(template_server, model)
    with template_server.client() as client:
        started = time.monotonic()
        response = client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 400, response.text
        assert words in response.json()["error"]["message"]
        assert time.monotonic() - started < 10
        streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert streamed.status_code == 400
        assert httpx.get(f"{template_server.url}/health").status_code == 200
        assert (
            client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code
            == 200
        )
