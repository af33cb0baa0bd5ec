"""Hostile input: every case gets a 4xx in the OpenAI error shape and the server keeps serving."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

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
    base = tmp_path_factory.mktemp("hostile-template-models")
    for name, source in HOSTILE_TEMPLATES.items():
        shutil.copytree(tiny_models / "tiny-a", base / name)
        (base / name / "chat_template.jinja").write_text(source)
    shutil.copytree(tiny_models / "tiny-a", base / "tiny-a")
    config = {
        "model": {"model_dir": str(base), "model_name": "wedge"},
        "embeddings": {"embedding_model_name": None},
        "limits": {"template_timeout": 1.0},
    }
    process = ServerProcess(tmp_path_factory.mktemp("hostile-template-server"), config).start()
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
    """Each is a 400 within the 1 s budget (plus 2 s for the trip), and the server's peak
    memory grows by far less than the 200 MB+ these strings took before the size checks."""
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
    assert elapsed < 3.0, elapsed
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
