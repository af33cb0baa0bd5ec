"""Bad bodies get OpenAI's 400 ``BadRequestError`` shape (never FastAPI's 422)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from common.auth import Authenticator
from common.config import ServalConfig
from common.model import ModelContainer
from endpoints.server import create_app
from endpoints.state import ServerState


@pytest.fixture(scope="module")
def client() -> TestClient:
    config = ServalConfig.model_validate({"network": {"disable_auth": True}})
    state = ServerState(config=config, auth=Authenticator(None), container=ModelContainer(config))
    return TestClient(create_app(state, start_model=False))


@pytest.mark.parametrize("body", ['{"prompt": "Hi",}', "{bad", '{"prompt": "Hi"'])
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions", "/api/v1/generate"])
def test_malformed_json_is_a_400_that_names_no_param(
    client: TestClient, path: str, body: str
) -> None:
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] is None  # FastAPI's location is a character offset, not a field
    assert error["code"] == "invalid_json"
    assert error["message"].startswith("The body is not valid JSON")
    assert "character" in error["message"]


@pytest.mark.parametrize("body", ["[1, 2]", '"text"'])
def test_a_body_that_is_not_an_object_is_a_400(client: TestClient, body: str) -> None:
    response = client.post(
        "/v1/completions", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "The body must be a JSON object."


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": "Hi", "temperature": 99}, "temperature"),
        ("/v1/chat/completions", {"messages": "Hi"}, "messages"),
        ("/api/v1/generate", {}, "prompt"),
        ("/v1/embeddings", {"input": "Hi", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_invalid_fields_are_a_400_in_the_openai_shape(
    client: TestClient, path: str, body: dict, param: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert param in error["message"]
