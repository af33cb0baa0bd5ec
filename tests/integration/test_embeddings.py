"""Embeddings over HTTP with the real default embedding model, all-MiniLM-L6-v2."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest
from openai import BadRequestError, OpenAI

from tests.conftest import DEFAULT_MODEL
from tests.support.server import ROOT, ServerProcess

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
FIXTURES = ROOT / "tests" / "fixtures" / "clients"
DIMENSIONS = 384
SENTENCES = [
    "A cat is sleeping on the sofa.",
    "A kitten naps on the couch.",
    "The central bank raised interest rates again.",
]


@pytest.fixture(scope="module")
def embedder(server: ServerProcess) -> ServerProcess:
    """The shared server, once its embedding model has loaded (it loads beside the LLM)."""
    if not (ROOT / "models" / EMBEDDING_MODEL / "modules.json").is_file():
        pytest.fail("the default embedding model is missing: run ./test.sh (it fetches it)")
    with server.client(timeout=120) as client:
        card = client.get("/v1/model/embedding")
    assert card.status_code == 200, card.text
    return server


def openai_client(server: ServerProcess, key: str) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def cosine(a: list[float], b: list[float]) -> float:
    va, vb = np.asarray(a), np.asarray(b)
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


def test_similar_sentences_are_closer_than_unrelated_ones(
    embedder: ServerProcess, api_key: str
) -> None:
    client = openai_client(embedder, api_key)
    answer = client.embeddings.create(model=EMBEDDING_MODEL, input=SENTENCES)
    vectors = [item.embedding for item in sorted(answer.data, key=lambda item: item.index)]
    assert [len(v) for v in vectors] == [DIMENSIONS] * 3
    assert answer.model == EMBEDDING_MODEL
    similar, unrelated = cosine(vectors[0], vectors[1]), cosine(vectors[0], vectors[2])
    assert similar > 0.5 > unrelated + 0.2
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > len(SENTENCES) * 5


def test_float_and_base64_encodings_carry_the_same_numbers(
    embedder: ServerProcess, api_key: str
) -> None:
    with embedder.client(api_key) as client:
        floats = client.post("/v1/embeddings", json={"input": SENTENCES[0]}).json()
        packed = client.post(
            "/v1/embeddings", json={"input": SENTENCES[0], "encoding_format": "base64"}
        ).json()
    assert floats["object"] == "list"
    assert [(d["object"], d["index"]) for d in floats["data"]] == [("embedding", 0)]
    as_floats = np.asarray(floats["data"][0]["embedding"], dtype=np.float32)
    as_bytes = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert as_bytes.shape == (DIMENSIONS,)
    assert np.array_equal(as_floats, as_bytes)
    assert abs(float(np.linalg.norm(as_floats)) - 1.0) < 1e-5
    assert floats["usage"] == packed["usage"]


def test_dimensions_only_where_the_model_allows_it(embedder: ServerProcess, api_key: str) -> None:
    client = openai_client(embedder, api_key)
    full = client.embeddings.create(model=EMBEDDING_MODEL, input="hi", dimensions=DIMENSIONS)
    assert len(full.data[0].embedding) == DIMENSIONS
    for dimensions, words in ((128, "not trained to be shortened"), (1000, "at most 384")):
        with pytest.raises(BadRequestError) as refused:
            client.embeddings.create(model=EMBEDDING_MODEL, input="hi", dimensions=dimensions)
        assert words in refused.value.message
        assert refused.value.body["param"] == "dimensions"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"input": []}, 400, "input is empty"),
        ({"input": ["fine", ""]}, 400, "input[1] is empty"),
        ({"input": [1, 2, 999_999_999]}, 400, "not a cl100k_base token"),
        ({"input": [[15339], [-1]]}, 400, "not a cl100k_base token"),
        ({"input": [[15339], "mixed"]}, 400, "input"),
        ({"input": "hi", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"input": "hi", "dimensions": 0}, 400, "dimensions"),
        ({}, 400, "input"),
    ],
)
def test_bad_embedding_requests_get_clear_errors(
    embedder: ServerProcess, api_key: str, body: dict, status: int, words: str
) -> None:
    with embedder.client(api_key) as client:
        response = client.post("/v1/embeddings", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]


def test_embedding_models_are_listed_apart_from_language_models(
    embedder: ServerProcess, api_key: str, admin_key: str
) -> None:
    with embedder.client(admin_key) as admin:
        listed = [c["id"] for c in admin.get("/v1/model/embedding/list").json()["data"]]
        language = [c["id"] for c in admin.get("/v1/models").json()["data"]]
    assert EMBEDDING_MODEL in listed
    assert DEFAULT_MODEL.name not in listed
    assert EMBEDDING_MODEL not in language
    with embedder.client(api_key) as client:
        assert [c["id"] for c in client.get("/v1/model/embedding/list").json()["data"]] == [
            EMBEDDING_MODEL
        ]
        card = client.get("/v1/model/embedding").json()
    assert card["id"] == EMBEDDING_MODEL
    assert card["parameters"] == {
        "dimensions": DIMENSIONS,
        "max_seq_len": 256,
        "device": "cpu",
        "matryoshka": False,
    }


def test_unload_and_load_the_embedding_model(
    embedder: ServerProcess, api_key: str, admin_key: str
) -> None:
    with embedder.client(api_key) as client, embedder.client(admin_key, timeout=120) as admin:
        assert client.post("/v1/model/embedding/unload").status_code == 403
        assert (
            client.post(
                "/v1/model/embedding/load", json={"embedding_model_name": EMBEDDING_MODEL}
            ).status_code
            == 403
        )
        try:
            assert admin.post("/v1/model/embedding/unload").status_code == 200
            gone = client.post("/v1/embeddings", json={"input": "hi"})
            assert gone.status_code == 503
            assert "No embedding model is loaded" in gone.json()["error"]["message"]
            assert client.get("/v1/model/embedding").status_code == 503
            assert httpx.get(f"{embedder.url}/health").status_code == 200
            assert admin.post("/v1/model/embedding/unload").status_code == 503
            for name, status in (("no-such", 404), ("../models", 400), (DEFAULT_MODEL.name, 400)):
                refused = admin.post("/v1/model/embedding/load", json={"name": name})
                assert refused.status_code == status, refused.text
        finally:
            loaded = admin.post(
                "/v1/model/embedding/load", json={"embedding_model_name": EMBEDDING_MODEL}
            )
        assert loaded.status_code == 200, loaded.text
        assert loaded.json() == {
            "model_type": "embedding_model",
            "module": 1,
            "modules": 1,
            "status": "finished",
        }
        assert client.post("/v1/embeddings", json={"input": "hi"}).status_code == 200


def test_langchains_token_arrays_embed_as_their_texts(
    embedder: ServerProcess, api_key: str
) -> None:
    """langchain's OpenAIEmbeddings sends cl100k_base token ids, not texts (issue 17)."""
    fixture = json.loads((FIXTURES / "langchain_embeddings.json").read_text())
    with embedder.client(api_key) as client:
        replayed = client.post("/v1/embeddings", json=fixture["body"])
        assert replayed.status_code == 200, replayed.text
        as_text = client.post("/v1/embeddings", json={"input": fixture["texts"]}).json()
    for item, expected in zip(replayed.json()["data"], as_text["data"], strict=True):
        vector = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        assert cosine(vector.tolist(), expected["embedding"]) > 0.999
