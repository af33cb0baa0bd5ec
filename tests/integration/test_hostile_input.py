"""Hostile input: every case gets a 4xx in the OpenAI error shape and the server keeps serving."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.support.server import ADMIN_KEY, API_KEY, ServerProcess

AUTH = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _assert_clean_4xx(server: ServerProcess, response: httpx.Response) -> dict:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    assert "Traceback" not in error["message"]
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
    return error


def _post(server: ServerProcess, path: str, body: object, headers: dict = AUTH) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{server.url}{path}",
        content=content,
        headers={**headers, "Content-Type": "application/json"},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"prompt": "x", "n": 10**6}),
        ("/v1/completions", {"prompt": "x", "max_tokens": 10**12}),
        ("/v1/completions", {"prompt": "x", "max_tokens": 9000}),
        ("/v1/completions", {"prompt": "x", "logprobs": 10**6}),
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "x"}],
                "top_logprobs": 10**6,
                "logprobs": True,
            },
        ),
        ("/v1/completions", {"prompt": "x", "max_tokens": -5}),
        ("/v1/completions", {"prompt": "x", "temperature": -1}),
        ("/v1/completions", {"prompt": "x", "n": 0}),
        ("/v1/completions", {"prompt": "x", "stop": ["a"] * 500}),
        ("/v1/completions", {"prompt": "x", "logit_bias": {"99999999": 5}}),
        ("/v1/completions", {"prompt": "x", "logit_bias": {"abc": 5}}),
        ("/v1/completions", {"prompt": [10**9]}),
        ("/v1/completions", {"prompt": []}),
        ("/v1/completions", {"prompt": "x", "response_format": {"type": "xml"}}),
        ("/v1/completions", {"prompt": "x", "stop": {"nested": True}}),
        ("/v1/chat/completions", {"messages": []}),
        ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}),
        ("/v1/chat/completions", {"messages": "not a list"}),
        ("/v1/token/encode", {"text": 42}),
        ("/v1/token/decode", {"tokens": [-1]}),
    ],
)
def test_bad_values(server: ServerProcess, path: str, body: dict) -> None:
    _assert_clean_4xx(server, _post(server, path, body))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(server: ServerProcess, literal: str) -> None:
    body = f'{{"prompt": "x", "max_tokens": 2, "temperature": {literal}}}'.encode()
    error = _assert_clean_4xx(server, _post(server, "/v1/completions", body))
    assert "temperature" in error["message"]


def test_fifty_megabyte_body_is_413(server: ServerProcess) -> None:
    body = b'{"prompt": "' + b"a" * (50 * 1024 * 1024) + b'"}'
    response = _post(server, "/v1/completions", body)
    assert response.status_code == 413
    _assert_clean_4xx(server, response)


def test_chunked_oversized_body_is_413(server: ServerProcess) -> None:
    def chunks():  # no Content-Length: the limit must hold on the bytes that arrive
        yield b'{"prompt": "'
        for _ in range(12):
            yield b"a" * (1024 * 1024)
        yield b'"}'

    response = httpx.post(
        f"{server.url}/v1/completions",
        content=chunks(),
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    _assert_clean_4xx(server, response)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"prompt": "\xff\xfe broken"}',
        b'{"prompt": "x", ',
        b"",
        b"null",
    ],
    ids=["deeply-nested", "invalid-utf8", "truncated", "empty", "null"],
)
def test_malformed_bodies(server: ServerProcess, body: bytes) -> None:
    _assert_clean_4xx(server, _post(server, "/v1/completions", body))


def test_prompt_over_the_context(server: ServerProcess) -> None:
    error = _assert_clean_4xx(server, _post(server, "/v1/completions", {"prompt": "hi " * 9000}))
    assert error["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    "extra",
    [
        {
            "json_schema": {
                "type": "object",
                "properties": {
                    f"k{i}": {
                        "anyOf": [{"type": "string", "pattern": "(a|b)*c{2,9999}"}, {"$ref": "#"}]
                    }
                    for i in range(200)
                },
                "required": [f"k{i}" for i in range(200)],
            }
        },
        {"regex_pattern": "(((a{1,1000}){1,1000}){1,1000})"},
        {"grammar_string": 'start: a\na: a a | "x" ' + '| "y" ' * 5000},
        {"json_schema": {"$ref": "#/definitions/missing"}},
    ],
    ids=["schema-bomb", "regex-bomb", "grammar-bomb", "dangling-ref"],
)
def test_exploding_constraints_are_refused_quickly(server: ServerProcess, extra: dict) -> None:
    started = time.monotonic()
    response = _post(server, "/v1/completions", {"prompt": "x", "max_tokens": 4, **extra})
    if response.status_code == 200:  # accepted: it must then have run within its bounds
        assert time.monotonic() - started < 30
        return
    _assert_clean_4xx(server, response)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/model/load", {"model_name": "../../etc"}),
        ("/v1/model/load", {"model_name": "/etc"}),
        (
            "/v1/model/load",
            {"model_name": "SmolLM2-135M-Instruct", "draft_model": {"draft_model_name": "../x"}},
        ),
        ("/v1/template/switch", {"name": "../../etc/passwd"}),
        ("/v1/sampling/override/switch", {"preset": "../../etc/passwd"}),
        ("/v1/sampling/override/switch", {"preset": "/etc/passwd"}),
    ],
)
def test_path_traversal_in_name_fields(server: ServerProcess, path: str, body: dict) -> None:
    error = _assert_clean_4xx(server, _post(server, path, body, headers=ADMIN))
    assert (
        "/etc" not in error["message"]
        or "inside" in error["message"]
        or "Invalid" in error["message"]
    )


def test_slow_clients_do_not_block_the_server(server: ServerProcess) -> None:
    sockets = []
    try:
        for _ in range(30):  # slowloris: headers that never finish
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            sockets.append(sock)
        started = time.monotonic()
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        assert time.monotonic() - started < 2
        # A body that never arrives gets 408 after network.body_timeout (2 s in the tests).
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sockets.append(slow)
        slow.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Length: 100\r\n\r\n{"
        )
        reply = b""
        deadline = time.monotonic() + 8
        while b'"error"' not in reply and time.monotonic() < deadline:
            reply += slow.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b'"error"' in reply
    finally:
        for sock in sockets:
            sock.close()
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
