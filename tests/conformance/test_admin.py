"""What an admin does, the same on every engine: unload and load with SSE progress, LoRAs through
the container and ``POST /v1/lora/load``, template switches, drafts as the engine advertises."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conformance.conftest import Served
from tests.support.sse import json_events

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def load(admin: httpx.Client, body: dict[str, Any]) -> tuple[httpx.Response, list[dict]]:
    with admin.stream("POST", "/v1/model/load", json=body) as response:
        response.read()
        events = json_events(response) if response.status_code == 200 else []
    return response, events


def complete(client: httpx.Client, tokens: int = 4) -> httpx.Response:
    body = {"prompt": "Once upon a time", "max_tokens": tokens, "temperature": 0}
    return client.post("/v1/completions", json=body)


def card(client: httpx.Client) -> dict[str, Any]:
    return client.get("/v1/model").json()


def test_startup_loras_are_applied_through_the_container(served: Served) -> None:
    assert served.startup_loras == [(served.lora, 0.0)]


def test_unload_then_load_with_progress(served: Served) -> None:
    with served.server.admin(timeout=120) as admin:
        assert card(admin)["parameters"]["backend"] == served.backend
        assert admin.post("/v1/model/unload").status_code == 200
        assert httpx.get(f"{served.server.url}/health").status_code == 503
        refused = complete(admin)
        assert refused.status_code == 503
        assert "No model is loaded" in refused.json()["error"]["message"]
        response, events = load(admin, {"model_name": served.model})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert len(events) >= 2
        assert all(set(e) == {"model_type", "module", "modules", "status"} for e in events)
        done = [e["module"] / e["modules"] for e in events if e["model_type"] == "model"]
        assert done == sorted(done)  # progress never goes back
        assert events[-1]["status"] == "finished"
        assert card(admin)["parameters"]["backend"] == served.backend
        assert complete(admin).status_code == 200
        # Loading what is loaded is immediate.
        _, again = load(admin, {"model_name": served.model})
        assert again == [{"model_type": "model", "module": 1, "modules": 1, "status": "finished"}]


def test_loras_load_list_and_unload(served: Served) -> None:
    with served.server.admin() as admin, served.server.client() as client:
        folders = [lora["id"] for lora in admin.get("/v1/loras").json()["data"]]
        assert served.lora in folders
        body = {"loras": [{"name": served.lora, "scaling": 0.5}]}
        loaded = admin.post("/v1/lora/load", json=body)
        assert loaded.status_code == 200, loaded.text
        assert loaded.json() == {"success": [served.lora], "failure": []}
        in_use = client.get("/v1/lora").json()["data"]
        assert [(lora["id"], lora["scaling"]) for lora in in_use] == [(served.lora, 0.5)]
        assert card(client)["parameters"]["loras"] == [served.lora]
        assert complete(client).status_code == 200
        assert client.post("/v1/lora/load", json=body).status_code == 403  # admins only
        assert admin.post("/v1/lora/unload").status_code == 200
        assert client.get("/v1/lora").json()["data"] == []
        assert card(client)["parameters"]["loras"] == []


def test_a_lora_changes_the_output_and_unloading_restores_it(served: Served) -> None:
    served.needs_real_logits("what a LoRA does to the output")
    with served.server.admin() as admin:
        assert admin.post("/v1/lora/unload").status_code == 200
        before = complete(admin, 8).json()["choices"][0]["text"]
        body = {"loras": [{"name": served.lora, "scaling": 1.0}]}
        assert admin.post("/v1/lora/load", json=body).status_code == 200
        with_lora = complete(admin, 8).json()["choices"][0]["text"]
        assert admin.post("/v1/lora/unload").status_code == 200
        after = complete(admin, 8).json()["choices"][0]["text"]
    assert with_lora != before
    assert after == before


def test_switching_templates_changes_the_prompt(served: Served) -> None:
    messages = [{"role": "user", "content": "Hello there"}]
    with served.server.admin() as admin:
        names = admin.get("/v1/templates").json()["data"]
        assert {"chatml", "alpaca"} <= set(names)

        def rendered() -> str:
            tokens = admin.post("/v1/token/encode", json={"text": messages}).json()["tokens"]
            return admin.post("/v1/token/decode", json={"tokens": tokens}).json()["text"]

        assert "<|im_start|>user\nHello there" in rendered()
        try:
            assert admin.post("/v1/template/switch", json={"name": "alpaca"}).status_code == 200
            assert "### Instruction:\nHello there" in rendered()
            with served.server.client() as client:
                assert client.get("/v1/templates").json()["data"] == ["alpaca"]
            for bad in ("../config", "/etc/passwd", "a/../../b"):
                refused = admin.post("/v1/template/switch", json={"name": bad})
                assert refused.status_code == 400, bad
            assert admin.post("/v1/template/switch", json={"name": "nope"}).status_code == 404
            assert admin.post("/v1/template/unload").status_code == 200
            no_template = admin.post("/v1/chat/completions", json=CHAT)
            assert no_template.status_code == 400
            assert no_template.json()["error"]["code"] == "no_chat_template"
        finally:
            assert admin.post("/v1/template/switch", json={"name": "chatml"}).status_code == 200
        assert "<|im_start|>user\nHello there" in rendered()
        assert admin.post("/v1/chat/completions", json=CHAT).status_code == 200


@pytest.mark.parametrize(
    ("mode", "draft"),
    [
        ("model", {"draft_model_name": "self"}),
        ("ngram", {"draft_model_name": "self", "draft_mode": "ngram"}),  # the name is required
    ],
)
def test_drafts_are_used_or_refused_as_the_engine_advertises(
    served: Served, mode: str, draft: dict[str, str]
) -> None:
    draft = {k: served.model if v == "self" else v for k, v in draft.items()}
    body = {"model_name": served.model, "draft_model": draft}
    with served.server.admin(timeout=120) as admin:
        response, events = load(admin, body)
        if mode not in served.draft_modes:
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["code"] == "unsupported" and "draft" in error["message"]
            assert card(admin)["parameters"]["draft"] is None  # the model kept serving
            assert complete(admin).status_code == 200
            return
        try:
            assert response.status_code == 200 and events[-1]["status"] == "finished", events
            expected = "ngram" if mode == "ngram" else served.model
            assert card(admin)["parameters"]["draft"] == expected
            answer = complete(admin)
            assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 4
        finally:
            restored, _ = load(admin, {"model_name": served.model})
            assert restored.status_code == 200
        assert card(admin)["parameters"]["draft"] is None
