"""The server answers the README's first requests."""

from __future__ import annotations

import httpx
import openai

from tests.support.server import API_KEY, ServerProcess


def test_health_docs_and_schema_answer(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "healthy", "issues": []}
    assert httpx.get(f"{server.url}/docs").status_code == 200
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"]


def test_readme_completion_request(server: ServerProcess) -> None:
    body = {
        "model": "meta-llama/Meta-Llama-3-8B",
        "prompt": "Once upon a time,",
        "max_tokens": 16,
        "stream": False,
        "min_p": 0.05,
        "repetition_penalty": 1.05,
    }
    with server.client() as client:
        response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["model"] == "SmolLM2-135M-Instruct"
    assert data["choices"][0]["text"].strip()
    assert data["usage"]["completion_tokens"] == 16


def test_chat_answers_a_question(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY)
    answer = client.chat.completions.create(
        model="anything",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=12,
    )
    assert "Paris" in answer.choices[0].message.content
