"""Hostile input: every case gets a 4xx in the OpenAI error shape and the server keeps serving."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.server import ADMIN_KEY, API_KEY, ServerProcess, start_with_templates

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
        ("/v1/completions", {"prompt": [303, -17934483]}),  # found by schemathesis: was a 500
        ("/v1/completions", {"prompt": [[1], [2**40]], "echo": True}),
        ("/v1/completions", {"prompt": []}),
        ("/v1/completions", {"prompt": "x", "response_format": {"type": "xml"}}),
        ("/v1/completions", {"prompt": "x", "stop": {"nested": True}}),
        ("/v1/chat/completions", {"messages": []}),
        ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}),
        ("/v1/chat/completions", {"messages": "not a list"}),
        ("/v1/responses", {"input": 42}),
        ("/v1/responses", {"input": []}),
        ("/v1/responses", {"input": "x", "max_output_tokens": 0}),
        ("/v1/responses", {"input": [{"type": "message", "content": "no role"}]}),
        ("/v1/responses", {"input": [{"type": "function_call", "name": "f"}]}),
        ("/v1/responses", {"input": "x", "tools": [{"type": "function"}]}),
        ("/v1/responses", {"input": "x", "tools": [{"type": "file_search"}]}),
        ("/v1/responses", {"input": "x", "previous_response_id": "resp_never"}),
        ("/v1/responses", {"input": "x", "text": {"format": {"type": "xml"}}}),
        ("/v1/responses", {"input": "x", "background": True}),
        ("/v1/token/encode", {"text": 42}),
        ("/v1/token/decode", {"tokens": [-1]}),
    ],
)
def test_bad_values(server: ServerProcess, path: str, body: dict) -> None:
    _assert_clean_4xx(server, _post(server, path, body))


ASK = [{"role": "user", "content": "x"}]
TOOL = {"name": "f", "input_schema": {"type": "object"}}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/messages", {"max_tokens": 4, "messages": []}),
        ("/v1/messages", {"max_tokens": 4, "messages": [{"role": "robot", "content": "x"}]}),
        ("/v1/messages", {"max_tokens": 4, "messages": [{"role": "user", "content": [{}]}]}),
        (
            "/v1/messages",
            {"max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "mystery"}]}]},
        ),
        ("/v1/messages", {"max_tokens": 10**12, "messages": ASK}),
        ("/v1/messages", {"max_tokens": 0, "messages": ASK}),
        ("/v1/messages", {"messages": ASK}),
        ("/v1/messages", {"max_tokens": 4, "messages": ASK, "temperature": -1}),
        ("/v1/messages", {"max_tokens": 4, "messages": ASK, "stop_sequences": ["a"] * 500}),
        ("/v1/messages", {"max_tokens": 4, "messages": ASK, "tool_choice": {"type": "any"}}),
        (
            "/v1/messages",
            {"max_tokens": 4, "messages": ASK, "tools": [TOOL], "tool_choice": {"type": "tool"}},
        ),
        (
            "/v1/messages",
            {
                "max_tokens": 4,
                "messages": ASK,
                "tools": [TOOL],
                "tool_choice": {"type": "tool", "name": "nope"},
            },
        ),
        ("/v1/messages", {"max_tokens": 4, "messages": ASK, "tools": [{"name": "f"}]}),
        ("/v1/messages", {"max_tokens": 4, "messages": ASK, "tools": [TOOL] * 10_000}),
        (
            "/v1/messages",
            {
                "max_tokens": 4,
                "messages": ASK,
                "thinking": {"type": "enabled", "budget_tokens": -1},
            },
        ),
        (
            "/v1/messages",
            {
                "max_tokens": 4,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [{"type": "image", "source": {}}],
                            }
                        ],
                    }
                ],
            },
        ),
        ("/v1/messages", b'{"max_tokens": 4, "messages": '),
        ("/v1/messages/count_tokens", {"messages": "not a list"}),
        ("/v1/messages/count_tokens", {"messages": [{"role": "user", "content": 42}]}),
    ],
)
def test_bad_messages_bodies_get_anthropic_errors(
    server: ServerProcess, path: str, body: dict | bytes
) -> None:
    response = _post(server, path, body, headers={"x-api-key": API_KEY})
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    answer = response.json()
    assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["message"] and "Traceback" not in answer["error"]["message"]
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200


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


# ----- one request must not freeze the event loop ------------------------------------------

BIG_TEXT = "hello world " * 825_000  # 9.9 MB: just under network.max_body_size


def _worst_health_latency_while(work: Callable[[], httpx.Response], server: ServerProcess):
    """Run ``work`` in a thread and poll /health meanwhile: (its response, the slowest answer)."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(work)
        worst = 0.0
        deadline = time.monotonic() + 120
        while not pending.done() and time.monotonic() < deadline:
            started = time.monotonic()
            with contextlib.suppress(httpx.TimeoutException):
                httpx.get(f"{server.url}/health", timeout=30)
            worst = max(worst, time.monotonic() - started)
            time.sleep(0.05)
        return pending.result(timeout=120), worst


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"prompt": BIG_TEXT, "max_tokens": 1}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": BIG_TEXT}]}),
        ("/v1/responses", {"input": BIG_TEXT, "max_output_tokens": 1}),
        ("/v1/token/encode", {"text": BIG_TEXT}),
        ("/api/extra/tokencount", {"prompt": BIG_TEXT}),
    ],
    ids=["completion", "chat", "responses", "token-encode", "kobold-tokencount"],
)
def test_a_huge_prompt_is_refused_without_tokenizing_it(
    server: ServerProcess, path: str, body: dict
) -> None:
    """It used to be tokenized on the event loop: 34-53 s, with /health timing out meanwhile."""
    response, worst = _worst_health_latency_while(lambda: _post(server, path, body), server)
    error = _assert_clean_4xx(server, response)
    if error["code"] != "template_error":  # a chat may already be too long for its template
        assert error["code"] == "context_length_exceeded"
        assert "without being tokenized" in error["message"]
    assert worst < 5, f"/health took {worst:.1f} s while the prompt was handled"


def test_kobold_keeps_the_end_of_a_huge_prompt_without_stalling(server: ServerProcess) -> None:
    body = {
        "prompt": BIG_TEXT + "The end.",
        "max_length": 2,
        "max_context_length": 64,
        "temperature": 0,
    }
    response, worst = _worst_health_latency_while(
        lambda: _post(server, "/api/v1/generate", body), server
    )
    assert response.status_code == 200, response.text[:300]
    assert worst < 5, f"/health took {worst:.1f} s while the prompt was handled"


def test_a_hundred_thousand_messages_are_refused_before_validation(server: ServerProcess) -> None:
    """Validating them took 4-7 s of the event loop (pydantic holds the GIL, even in a thread)."""
    body = {"messages": [{"role": "user", "content": "hi"}] * 100_000, "max_tokens": 1}
    response, worst = _worst_health_latency_while(
        lambda: _post(server, "/v1/chat/completions", body), server
    )
    error = _assert_clean_4xx(server, response)
    assert "limits.max_json_objects" in error["message"]
    assert worst < 5, f"/health took {worst:.1f} s while the body was handled"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}] * 1025, "max_tokens": 1},
            "messages",
        ),
        ("/v1/token/encode", {"text": [{"role": "user", "content": "hi"}] * 1025}, "text"),
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)],
            },
            "tools",
        ),
    ],
    ids=["messages", "token-encode-messages", "tools"],
)
def test_message_and_tool_caps(server: ServerProcess, path: str, body: dict, param: str) -> None:
    error = _assert_clean_4xx(server, _post(server, path, body))
    assert error["param"] == param


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "x", "banned_tokens": list(range(49152)), "max_tokens": 2},
        {"prompt": "x", "logit_bias": {str(i): -100 for i in range(49152)}, "max_tokens": 2},
        {"prompt": "x", "allowed_tokens": [5, 6], "banned_tokens": [5, 6], "max_tokens": 2},
    ],
    ids=["banned-tokens", "logit-bias", "allowed-all-banned"],
)
def test_banning_every_token_is_refused(server: ServerProcess, body: dict) -> None:
    """A banned token used to be sampled anyway."""
    error = _assert_clean_4xx(server, _post(server, "/v1/completions", body))
    assert "banned" in error["message"]


def _nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def test_a_deeply_nested_extra_field_is_a_400(server: ServerProcess) -> None:
    """900 levels in an extra message field: a RecursionError in a deepcopy (connection reset)."""
    message = {"role": "user", "content": "hi", "extra": _nested(900)}
    body = {"messages": [message], "max_tokens": 1}
    error = _assert_clean_4xx(server, _post(server, "/v1/chat/completions", body))
    assert "limits.max_json_depth" in error["message"]


LONG_NAME = "n" * 300
SURROGATE = "bad\ud800name"


@pytest.mark.parametrize("name", [LONG_NAME, SURROGATE], ids=["300-bytes", "lone-surrogate"])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/model/load", lambda name: {"model_name": name}),
        (
            "/v1/model/load",
            lambda name: {
                "model_name": "SmolLM2-135M-Instruct",
                "draft_model": {"draft_model_name": name},
            },
        ),
        ("/v1/lora/load", lambda name: {"loras": [{"name": name}]}),
        ("/v1/template/switch", lambda name: {"name": name}),
        ("/v1/sampling/override/switch", lambda name: {"preset": name}),
        ("/v1/model/embedding/load", lambda name: {"embedding_model_name": name}),
    ],
    ids=["model", "draft", "lora", "template", "preset", "embedding"],
)
def test_names_the_file_system_cannot_take(
    server: ServerProcess, path: str, body: Callable[[str], dict], name: str
) -> None:
    """ENAMETOOLONG or a UnicodeEncodeError used to reset the connection (a 500)."""
    _assert_clean_4xx(server, _post(server, path, body(name), headers=ADMIN))


@pytest.mark.parametrize("header", [b"Authorization: Bearer ", b"X-API-Key: "])
def test_a_repeated_key_header_is_refused(server: ServerProcess, header: bytes) -> None:
    """Only the first value was checked; a second one passed unseen."""
    lines = [header + API_KEY.encode(), header + b"guess"]
    reply = _raw_request(server, b"GET /v1/auth/permission HTTP/1.1", lines)
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    assert b"ambiguous_api_key" in reply


def test_a_body_without_a_key_is_refused_before_it_is_read(server: ServerProcess) -> None:
    """The body used to be read and parsed before the key was checked."""
    lines = [b"Content-Type: application/json", b"Content-Length: 1000"]  # the body never comes
    started = time.monotonic()
    reply = _raw_request(server, b"POST /v1/completions HTTP/1.1", lines)
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    assert time.monotonic() - started < 2  # not the 408 of network.body_timeout (2 s here)
    reply = _raw_request(server, b"POST /v1/messages HTTP/1.1", lines)  # Anthropic's shape
    assert reply.startswith(b"HTTP/1.1 401") and b'"authentication_error"' in reply, reply[:300]
    assert b'"type":"error"' in reply


def _raw_request(server: ServerProcess, start: bytes, lines: list[bytes]) -> bytes:
    """Send a request head over a plain socket and read the reply up to its error body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(start + b"\r\nHost: x\r\n" + b"".join(line + b"\r\n" for line in lines))
        sock.sendall(b"\r\n")
        reply = b""
        deadline = time.monotonic() + 10
        while b"}}" not in reply and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply


# ----- grammars that crashed the process (issue 15, finding 1) ------------------------------

CHAIN = "\n".join(["start: r0", *(f"r{i}: r{i + 1}" for i in range(5000)), 'r5000: "a"'])
GBNF_CHAIN = (
    "root ::= r0\n" + "".join(f"r{i} ::= r{i + 1}\n" for i in range(5000)) + 'r5000 ::= "a"'
)
REF_CHAIN = {
    "$ref": "#/$defs/a0",
    "$defs": {
        **{f"a{i}": {"$ref": f"#/$defs/a{i + 1}"} for i in range(5000)},
        "a5000": {"type": "string"},
    },
}
CHAT_X = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"prompt": "x", "max_tokens": 2, "grammar_string": CHAIN}),
        ("/v1/completions", {"prompt": "x", "max_tokens": 2, "grammar_string": GBNF_CHAIN}),
        ("/v1/completions", {"prompt": "x", "max_tokens": 2, "json_schema": REF_CHAIN}),
        (
            "/v1/chat/completions",
            {
                **CHAT_X,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "chain", "schema": REF_CHAIN},
                },
            },
        ),
        (
            "/v1/chat/completions",
            {
                **CHAT_X,
                "tools": [{"type": "function", "function": {"name": "f", "parameters": REF_CHAIN}}],
                "tool_choice": "required",
            },
        ),
        ("/api/v1/generate", {"prompt": "x", "max_length": 2, "grammar": CHAIN}),
    ],
    ids=["lark", "gbnf", "json-schema", "response-format", "tool-schema", "kobold"],
)
def test_chained_grammars_are_refused_and_the_server_lives(
    server: ServerProcess, path: str, body: dict
) -> None:
    error = _assert_clean_4xx(server, _post(server, path, body))
    assert error["code"] == "grammar_too_large", error
    assert "limits.grammar_max_rules" in error["message"]


def test_under_a_grammar_attack_health_answers_and_others_finish(server: ServerProcess) -> None:
    # Just under the rule limit: compiled, on the grammar threads.
    grammar = "\n".join(["start: r0", *(f"r{i}: r{i + 1}" for i in range(1990)), 'r1990: "a"'])
    body = {"prompt": "x", "max_tokens": 2, "grammar_string": grammar}

    def attack() -> int:
        return _post(server, "/v1/completions", body).status_code

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        attacks = [pool.submit(attack) for _ in range(6)]
        started = time.monotonic()
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
        assert time.monotonic() - started < 5
        plain = _post(server, "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
        assert plain.status_code == 200
        assert all(a.result(timeout=120) in (200, 400) for a in attacks)


# ----- chat templates that wedged the server or took its memory (finding 2) -----------------

HOSTILE_TEMPLATES = {
    "wedge": '{% set s = "a" * 3000 %}{% for a in s %}{% for b in s %}{% for c in s %}'
    "{% endfor %}{% endfor %}{% endfor %}",
    "lipsum": "{{ lipsum(20000) }}",
    "wordwrap": '{{ ("word " * 800000) | wordwrap(3) }}',
    # Built from the request, so that Jinja cannot fold them into constants at load time.
    "percent": "{{ (messages[0].content[:0] ~ '%0200000000d') % 1 }}",
    "center": "{{ messages[0].content | center(200000000) }}",
    "format": "{{ '{0:>200000000}'.format(1) }}",
    "tojson": "{{ messages | tojson(indent=200000000) }}",
    "plus": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
    "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
    "tilde": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "capture": "{% set s = 'a' * 3000000 %}{% set x %}{% for i in range(100) %}{{ s }}"
    "{% endfor %}{% endset %}{{ x }}",
}


@pytest.fixture(scope="module")
def hostile_template_server(
    tiny_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    process = start_with_templates(
        tiny_models / "tiny-a",
        HOSTILE_TEMPLATES,
        "wedge",
        tmp_path_factory.mktemp("hostile-template-server"),
    )
    yield process
    process.stop()


def _load(server: ServerProcess, name: str, timeout: float = 60) -> None:
    with (
        server.admin(timeout=timeout) as admin,
        admin.stream("POST", "/v1/model/load", json={"model_name": name}) as response,
    ):
        assert response.status_code == 200
        response.read()


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.parametrize("name", [name for name in HOSTILE_TEMPLATES if name != "wedge"])
def test_templates_that_build_huge_strings_are_stopped_before_they_allocate(
    hostile_template_server: ServerProcess, name: str
) -> None:
    """Each is a 400 soon after the 1 s budget (10 s allowed for the trip on a busy machine; a
    render that ran on would take minutes), and the server's peak memory grows by far less
    than the 200 MB+ these strings took before the size checks."""
    server = hostile_template_server
    _load(server, name)
    assert server.process is not None
    pid = server.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # restart the peak (VmHWM) count here
    before = _memory_kib(pid, "VmRSS")
    started = time.monotonic()
    response = _post(server, "/v1/chat/completions", CHAT_X)
    elapsed = time.monotonic() - started
    error = _assert_clean_4xx(server, response)
    assert error["code"] in ("template_too_large", "template_timeout", "template_error"), error
    assert elapsed < 10.0, elapsed
    assert _memory_kib(pid, "VmHWM") - before < 100_000


def test_a_template_whose_loops_call_nothing_is_stopped_and_starves_nothing(
    hostile_template_server: ServerProcess,
) -> None:
    """Six such renders took every worker of the default thread pool: model loads then
    never progressed. Now each stops at limits.template_timeout (1 s here)."""
    server = hostile_template_server
    _load(server, "wedge")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        chats = [pool.submit(_post, server, "/v1/chat/completions", CHAT_X) for _ in range(8)]
        started = time.monotonic()
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
        assert time.monotonic() - started < 5
        plain = _post(server, "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
        assert plain.status_code == 200
        for chat in chats:
            response = chat.result(timeout=60)
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "template_timeout"
        _load(server, "tiny-a", timeout=30)  # a load is not starved by the renders
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
