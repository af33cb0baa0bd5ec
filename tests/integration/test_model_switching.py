"""Changing what answers, over HTTP, on tiny random models: LoRAs (tiny random adapters made
offline with PEFT), switching models by the `model` field of a request, dummy model names,
per-model load defaults and draft models. One server serves the whole module; each test sets
the state it needs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.files import link_tree
from tests.support.server import ADMIN_KEY, API_KEY, ServerProcess
from tests.support.sse import data_events
from tests.support.tiny_lora import build_tiny_lora
from tests.support.tiny_model import build_tiny_model

PROMPT = "The import statement"
GREEDY = {"prompt": PROMPT, "temperature": 0, "ignore_eos": True}
PROMPTS = [PROMPT, "A class", "Exceptions are raised when", "x"]


@pytest.fixture(scope="module")
def tiny_server(
    tiny_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("switching")
    models = base / "models"
    link_tree(tiny_models / "tiny-a", models / "tiny-a")
    link_tree(tiny_models / "tiny-b", models / "tiny-b")
    (models / "tiny-b" / "tabby_config.yml").write_text(
        yaml.safe_dump({"model": {"max_seq_len": 384}})
    )
    loras = base / "loras"
    build_tiny_lora(models / "tiny-a", loras / "tiny-lora", seed=3)
    build_tiny_lora(models / "tiny-a", loras / "team" / "other-lora", seed=4)
    # An adapter made for a model of another shape: it cannot be applied to tiny-a.
    wider = build_tiny_model(base / "wider", seed=5, hidden_size=96, heads=4, kv_heads=2)
    build_tiny_lora(wider, loras / "mismatched", seed=6)
    (base / "outside").mkdir()
    build_tiny_lora(models / "tiny-a", base / "outside" / "secret-lora", seed=7)
    (loras / "escape").symlink_to(base / "outside" / "secret-lora")
    config = {
        "model": {
            "model_dir": str(models),
            "model_name": "tiny-a",
            "inline_model_loading": True,
            "use_dummy_models": True,
            "dummy_model_names": ["gpt-3.5-turbo"],
            # float32: a batch of four gives the same greedy text as one request alone.
            "dtype": "float32",
            "use_as_default": ["dtype"],
        },
        "draft_model": {"draft_model_dir": str(models)},
        "lora": {"lora_dir": str(loras), "loras": [{"name": "tiny-lora", "scaling": 1.0}]},
        # The configured embedding model is missing: the server starts and serves without it.
        "embeddings": {"embedding_model_dir": str(models), "embedding_model_name": "no-such"},
    }
    process = ServerProcess(tmp_path_factory.mktemp("switching-server"), config).start()
    yield process
    process.stop()


# ----- LoRAs ---------------------------------------------------------------------------------


def greedy(server: ServerProcess, max_tokens: int = 12) -> tuple[str, list[float]]:
    """The greedy completion of PROMPT and the logprob of each token (exact floats)."""
    with server.client() as client:
        response = client.post(
            "/v1/completions", json={**GREEDY, "max_tokens": max_tokens, "logprobs": 1}
        )
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    return choice["text"], choice["logprobs"]["token_logprobs"]


def load(server: ServerProcess, loras: list[dict], **extra: object) -> httpx.Response:
    with server.admin() as admin:
        return admin.post("/v1/lora/load", json={"loras": loras, **extra})


def unload(server: ServerProcess, **extra: object) -> None:
    with server.admin() as admin:
        assert admin.post("/v1/lora/unload", json=extra).status_code == 200


def active(server: ServerProcess) -> list[tuple[str, float]]:
    with server.client() as client:
        cards = client.get("/v1/lora").json()["data"]
    return [(card["id"], card["scaling"]) for card in cards]


def _stream(server: ServerProcess, body: dict, started: threading.Event) -> dict:
    """A streamed completion as ``{"status", "model", "text", "finish", "error"}``."""
    result: dict = {"text": "", "model": None, "finish": None, "error": None}
    with (
        server.admin(timeout=120) as client,
        client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response,
    ):
        result["status"] = response.status_code
        if response.status_code != 200:
            response.read()
            result["error"] = response.json()["error"]
            started.set()
            return result
        for data in data_events(response):
            started.set()
            if data == "[DONE]":
                continue
            event = json.loads(data)
            if "error" in event:
                result["error"] = event["error"]
                continue
            result["model"] = event["model"]
            for choice in event["choices"]:
                result["text"] += choice["text"]
                result["finish"] = choice["finish_reason"] or result["finish"]
    started.set()
    return result


def test_startup_lora_is_in_use_and_listed(tiny_server: ServerProcess) -> None:
    assert active(tiny_server) == [("tiny-lora", 1.0)]
    with tiny_server.client() as client:
        assert [c["id"] for c in client.get("/v1/loras").json()["data"]] == ["tiny-lora"]
        assert client.get("/v1/model").json()["parameters"]["loras"] == ["tiny-lora"]
    with tiny_server.admin() as admin:
        cards = {c["id"]: c for c in admin.get("/v1/lora/list").json()["data"]}
    # Every adapter folder, nested ones by their path; nothing reached through a symlink.
    assert set(cards) == {"tiny-lora", "team/other-lora", "mismatched"}
    assert cards["tiny-lora"]["scaling"] == 1.0
    assert cards["mismatched"]["scaling"] is None
    assert cards["tiny-lora"]["object"] == "lora"


def test_lora_changes_output_and_unload_restores_it_exactly(tiny_server: ServerProcess) -> None:
    assert load(tiny_server, [{"name": "tiny-lora"}]).json()["success"] == ["tiny-lora"]
    with_lora = greedy(tiny_server)
    unload(tiny_server)
    assert active(tiny_server) == []
    base = greedy(tiny_server)
    assert base[0] != with_lora[0]
    assert base[1] != with_lora[1]

    assert load(tiny_server, [{"name": "tiny-lora"}]).json() == {
        "success": ["tiny-lora"],
        "failure": [],
    }
    assert greedy(tiny_server) == with_lora  # the same text and bit-identical logprobs
    unload(tiny_server)
    assert greedy(tiny_server) == base


def test_scaling_and_two_loras(tiny_server: ServerProcess) -> None:
    unload(tiny_server)
    base = greedy(tiny_server)
    assert load(tiny_server, [{"name": "tiny-lora", "scaling": 0}]).status_code == 200
    assert active(tiny_server) == [("tiny-lora", 0.0)]
    assert greedy(tiny_server) == base  # scaling 0: the LoRA adds exactly nothing
    load(tiny_server, [{"name": "tiny-lora", "scaling": 1.0}])
    single = greedy(tiny_server)
    load(tiny_server, [{"name": "tiny-lora", "scaling": 2.0}])
    assert greedy(tiny_server)[1] != single[1]
    result = load(tiny_server, [{"name": "tiny-lora"}, {"name": "team/other-lora"}]).json()
    assert result == {"success": ["tiny-lora", "team/other-lora"], "failure": []}
    assert active(tiny_server) == [("tiny-lora", 1.0), ("team/other-lora", 1.0)]
    assert greedy(tiny_server)[1] not in (base[1], single[1])
    unload(tiny_server)
    assert greedy(tiny_server) == base


def test_loras_that_cannot_be_applied_are_reported_and_leave_no_trace(
    tiny_server: ServerProcess,
) -> None:
    load(tiny_server, [{"name": "tiny-lora"}])
    with_lora = greedy(tiny_server)
    response = load(
        tiny_server, [{"name": "mismatched"}, {"name": "tiny-lora"}, {"name": "no-such-lora"}]
    )
    assert response.status_code == 200
    assert response.json() == {"success": ["tiny-lora"], "failure": ["mismatched", "no-such-lora"]}
    assert active(tiny_server) == [("tiny-lora", 1.0)]
    assert greedy(tiny_server) == with_lora


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"loras": [{"name": "../loras/tiny-lora"}]}, 400, "inside"),
        ({"loras": [{"name": "/etc"}]}, 400, "inside"),
        ({"loras": [{"name": "escape"}]}, 400, "outside"),
        ({"loras": []}, 400, "at least one"),
        ({"loras": [{"name": "tiny-lora"}, {"name": "tiny-lora"}]}, 400, "twice"),
        ({"loras": [{"name": "tiny-lora", "scaling": -1}]}, 400, "scaling"),
        ({"loras": "tiny-lora"}, 400, "loras"),
    ],
)
def test_bad_lora_requests_are_refused_and_change_nothing(
    tiny_server: ServerProcess, body: dict, status: int, words: str
) -> None:
    load(tiny_server, [{"name": "tiny-lora"}])
    with tiny_server.admin() as admin:
        response = admin.post("/v1/lora/load", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]
    assert active(tiny_server) == [("tiny-lora", 1.0)]


def test_api_keys_cannot_change_loras(tiny_server: ServerProcess) -> None:
    with tiny_server.client() as client:
        assert client.post("/v1/lora/load", json={"loras": [{"name": "x"}]}).status_code == 403
        assert client.post("/v1/lora/unload").status_code == 403
    with httpx.Client(base_url=tiny_server.url) as anonymous:
        assert anonymous.get("/v1/loras").status_code == 401


@pytest.mark.parametrize("skip_queue", [False, True])
def test_a_request_in_flight_never_mixes_weights(
    tiny_server: ServerProcess, skip_queue: bool
) -> None:
    unload(tiny_server)
    length = 300
    base_text = greedy(tiny_server, max_tokens=length)[0]
    started = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        streaming = pool.submit(_stream, tiny_server, {**GREEDY, "max_tokens": length}, started)
        assert started.wait(60)
        changed = load(tiny_server, [{"name": "tiny-lora"}], skip_queue=skip_queue)
        if not skip_queue:
            assert streaming.done()  # the load answered only once the stream had ended
        result = streaming.result()
    assert changed.status_code == 200
    if result["error"] is not None:  # cancelled by skip_queue: a clear error, after base text
        assert skip_queue
        assert result["error"]["code"] == "cancelled"
        assert base_text.startswith(result["text"])
    else:  # the load waited: the whole answer came from the weights it started with
        assert result["finish"] == "length"
        assert result["text"] == base_text
    assert greedy(tiny_server, max_tokens=length)[0] != base_text
    unload(tiny_server)


# ----- models by name ------------------------------------------------------------------------


def complete(
    server: ServerProcess, model: str | None, key: str = ADMIN_KEY, prompt: str = PROMPTS[0]
) -> httpx.Response:
    body = {"prompt": prompt, "max_tokens": 4, "temperature": 0}
    if model is not None:
        body["model"] = model
    with server.client(key, timeout=120) as client:
        return client.post("/v1/completions", json=body)


def loaded(server: ServerProcess) -> dict:
    with server.client() as client:
        return client.get("/v1/model").json()


def test_dummy_models_are_listed_for_every_key(tiny_server: ServerProcess) -> None:
    for key in (API_KEY, ADMIN_KEY):
        with tiny_server.client(key) as client:
            ids = [card["id"] for card in client.get("/v1/models").json()["data"]]
        assert ids[0] == "gpt-3.5-turbo"


def test_api_keys_use_the_loaded_model_or_a_dummy_name_only(tiny_server: ServerProcess) -> None:
    assert complete(tiny_server, "tiny-a").status_code == 200
    for name in (None, "tiny-a", "gpt-3.5-turbo"):
        response = complete(tiny_server, name, key=API_KEY)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "tiny-a"
    for name in ("tiny-b", "no-such-model", "../tiny-a"):
        refused = complete(tiny_server, name, key=API_KEY)
        assert refused.status_code == 403, refused.text
        assert "only an admin key may load it" in refused.json()["error"]["message"]
    assert loaded(tiny_server)["id"] == "tiny-a"


def test_admin_keys_switch_models_by_name_with_the_folder_defaults(
    tiny_server: ServerProcess,
) -> None:
    response = complete(tiny_server, "tiny-b")
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "tiny-b"
    card = loaded(tiny_server)
    assert card["id"] == "tiny-b"
    # tiny-b/tabby_config.yml sets max_seq_len; the model's own would be 512.
    assert card["parameters"]["max_seq_len"] == 384
    # An API load names another length; the folder's file still wins, as in TabbyAPI.
    with (
        tiny_server.admin() as admin,
        admin.stream(
            "POST", "/v1/model/load", json={"model_name": "tiny-b", "max_seq_len": 256}
        ) as load,
    ):
        assert load.status_code == 200
        load.read()
    assert loaded(tiny_server)["parameters"]["max_seq_len"] == 384
    assert complete(tiny_server, "tiny-a").json()["model"] == "tiny-a"
    assert loaded(tiny_server)["parameters"]["max_seq_len"] == 512


@pytest.mark.parametrize(
    ("name", "status", "words"),
    [("no-such-model", 404, "not found"), ("../x", 400, "inside"), ("/etc", 400, "inside")],
)
def test_admin_naming_a_bad_model_is_refused(
    tiny_server: ServerProcess, name: str, status: int, words: str
) -> None:
    before = loaded(tiny_server)["id"]
    response = complete(tiny_server, name)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]
    assert loaded(tiny_server)["id"] == before


def test_an_inline_switch_while_four_requests_stream(tiny_server: ServerProcess) -> None:
    """The streams finish on the model they started on; requests that name another model wait
    for them, then run on the model they name; api keys naming the old model are refused."""
    greedy = {"max_tokens": 200, "temperature": 0, "ignore_eos": True}

    def alone(model: str, prompt: str) -> str:
        with tiny_server.admin(timeout=120) as admin:
            body = {**greedy, "model": model, "prompt": prompt}
            return admin.post("/v1/completions", json=body).json()["choices"][0]["text"]

    expected = {(m, p): alone(m, p) for m in ("tiny-b", "tiny-a") for p in PROMPTS[:2]}
    assert loaded(tiny_server)["id"] == "tiny-a"

    starts = [threading.Event() for _ in range(4)]
    with ThreadPoolExecutor(8) as pool:
        streams = [
            pool.submit(
                _stream,
                tiny_server,
                {**greedy, "model": "tiny-a", "prompt": PROMPTS[i % 2]},
                starts[i],
            )
            for i in range(4)
        ]
        for started in starts:
            assert started.wait(60)
        switch = pool.submit(
            _stream,
            tiny_server,
            {**greedy, "model": "tiny-b", "prompt": PROMPTS[0]},
            threading.Event(),
        )
        back = pool.submit(
            _stream,
            tiny_server,
            {**greedy, "model": "tiny-a", "prompt": PROMPTS[1]},
            threading.Event(),
        )
        api_old = pool.submit(complete, tiny_server, "tiny-a", API_KEY)
        results = [future.result() for future in streams]
        switched, returned = switch.result(), back.result()
        api_response = api_old.result()

    for index, result in enumerate(results):
        assert result["status"] == 200 and result["error"] is None, result
        assert result["model"] == "tiny-a"
        assert result["finish"] == "length"
        assert result["text"] == expected[("tiny-a", PROMPTS[index % 2])]
    for result, model, prompt in (
        (switched, "tiny-b", PROMPTS[0]),
        (returned, "tiny-a", PROMPTS[1]),
    ):
        assert result["error"] is None, result
        assert result["model"] == model
        assert result["text"] == expected[(model, prompt)]
    # An api key naming tiny-a either ran on it or, if tiny-b was loaded by then, was refused.
    assert api_response.status_code in (200, 403), api_response.text
    if api_response.status_code == 200:
        assert api_response.json()["model"] == "tiny-a"
    assert httpx.get(f"{tiny_server.url}/health").status_code == 200


def test_the_server_serves_without_its_embedding_model(tiny_server: ServerProcess) -> None:
    assert httpx.get(f"{tiny_server.url}/health").status_code == 200
    with tiny_server.client() as client:
        response = client.post("/v1/embeddings", json={"input": "hello"})
    assert response.status_code == 503
    assert "No embedding model is loaded" in response.json()["error"]["message"]
    assert "embedding model 'no-such' was not loaded" in tiny_server.log()
