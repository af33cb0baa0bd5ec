"""The whole API surface: the key level of every route, and property-based fuzzing.

``ROUTE_LEVELS`` is the table of who may call what. A route that appears in the OpenAPI schema
without an entry here fails the test, so every new route gets a conscious auth decision.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ADMIN_KEY, API_KEY, ROOT, ServerProcess

NONE, API, ADMIN = "none", "api", "admin"
ROUTE_LEVELS: dict[tuple[str, str], str] = {
    ("GET", "/health"): NONE,
    ("GET", "/.well-known/serviceinfo"): NONE,
    ("GET", "/metrics"): API,
    ("GET", "/v1/auth/permission"): API,
    ("GET", "/v1/models"): API,
    ("GET", "/v1/models/{model_id}"): API,
    ("GET", "/v1/model/list"): API,
    ("GET", "/v1/model/draft/list"): API,
    ("GET", "/v1/model"): API,
    ("GET", "/props"): API,
    ("POST", "/v1/model/load"): ADMIN,
    ("POST", "/v1/model/unload"): ADMIN,
    ("POST", "/v1/token/encode"): API,
    ("POST", "/v1/token/decode"): API,
    ("GET", "/v1/templates"): API,
    ("GET", "/v1/template/list"): API,
    ("POST", "/v1/template/switch"): ADMIN,
    ("POST", "/v1/template/unload"): ADMIN,
    ("GET", "/v1/sampling/overrides"): API,
    ("GET", "/v1/sampling/override/list"): API,
    ("POST", "/v1/sampling/override/switch"): ADMIN,
    ("POST", "/v1/sampling/override/unload"): ADMIN,
    ("POST", "/v1/completions"): API,
    ("POST", "/v1/chat/completions"): API,
    ("POST", "/v1/responses"): API,
    ("GET", "/v1/responses/{response_id}"): API,
    ("DELETE", "/v1/responses/{response_id}"): API,
    ("POST", "/v1/embeddings"): API,
    ("POST", "/v1/messages"): API,
    ("POST", "/v1/messages/count_tokens"): API,
    ("GET", "/v1/lora"): API,
    ("GET", "/v1/loras"): API,
    ("GET", "/v1/lora/list"): API,
    ("POST", "/v1/lora/load"): ADMIN,
    ("POST", "/v1/lora/unload"): ADMIN,
    ("POST", "/v1/download"): ADMIN,
    ("GET", "/v1/model/embedding"): API,
    ("GET", "/v1/model/embedding/list"): API,
    ("POST", "/v1/model/embedding/load"): ADMIN,
    ("POST", "/v1/model/embedding/unload"): ADMIN,
    ("POST", "/api/v1/generate"): API,
    ("POST", "/api/extra/generate/stream"): API,
    ("GET", "/api/extra/generate/check"): API,
    ("POST", "/api/extra/generate/check"): API,
    ("POST", "/api/extra/abort"): API,
    ("POST", "/api/extra/tokencount"): API,
    ("POST", "/api/extra/last_logprobs"): API,
    # Kobold's info routes answer without a key, as KoboldCpp's (Kobold Lite connects first).
    ("GET", "/api/v1/model"): NONE,
    ("GET", "/api/v1/config/max_length"): NONE,
    ("GET", "/api/v1/config/max_context_length"): NONE,
    ("GET", "/api/extra/true_max_context_length"): NONE,
    ("GET", "/api/v1/info/version"): NONE,
    ("GET", "/api/extra/version"): NONE,
    ("GET", "/api/extra/perf"): NONE,
    ("GET", "/api/extra/preloadstory"): NONE,
    ("GET", "/api/v1/config/soft_prompts_list"): NONE,
    ("GET", "/api/v1/config/soft_prompt"): NONE,
    ("PUT", "/api/v1/config/soft_prompt"): API,
}
# Routes that would change the shared state of the fuzzing server (they have their own tests).
NOT_FUZZED = [
    "/v1/download",
    "/v1/model/load",
    "/v1/model/unload",
    "/v1/template/unload",
    "/v1/lora/load",
    "/v1/lora/unload",
    "/v1/model/embedding/load",
    "/v1/model/embedding/unload",
]


@pytest.fixture(scope="module")
def surface_server(
    tiny_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    config = {
        "network": {"api_servers": ["OAI", "Kobold"]},
        "model": {"model_dir": str(tiny_models), "model_name": "tiny-a"},
        "embeddings": {"embedding_model_dir": str(ROOT / "models")},
        "limits": {"max_tokens": 4, "max_n": 2, "max_prompts": 2, "template_timeout": 0.5},
    }
    process = ServerProcess(tmp_path_factory.mktemp("surface"), config).start()
    with process.client() as client:  # the embedding model loads in the background
        deadline = time.monotonic() + 120
        while client.get("/v1/model/embedding").status_code != 200:
            assert time.monotonic() < deadline, "the embedding model did not load"
            time.sleep(0.5)
    yield process
    process.stop()


def _operations(server: ServerProcess) -> list[tuple[str, str]]:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    return [(method.upper(), path) for path, ops in schema["paths"].items() for method in ops]


def test_every_route_has_an_auth_entry(surface_server: ServerProcess) -> None:
    missing = sorted(set(_operations(surface_server)) - set(ROUTE_LEVELS))
    assert not missing, f"routes without an entry in ROUTE_LEVELS: {missing}"


def _status(server: ServerProcess, method: str, path: str, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    # An empty JSON object: enough for the auth check, never a valid request that changes state
    # (a body that fails validation is answered after the key check).
    body = None if method == "GET" else {"__never_valid__": True}
    return httpx.request(
        method, f"{server.url}{path}", json=body, headers=headers, timeout=30
    ).status_code


def test_auth_matrix(surface_server: ServerProcess) -> None:
    problems = []
    keys = (("none", None), ("wrong", "wrong-key"), ("api", API_KEY), ("admin", ADMIN_KEY))
    for (method, path), level in sorted(ROUTE_LEVELS.items(), key=lambda item: item[1]):
        # Unloads take no body, so the admin key would really unload: it is left out for them.
        tried = [k for k in keys if not (path.endswith("/unload") and k[0] == "admin")]
        got = {name: _status(surface_server, method, path, key) for name, key in tried}
        expected = {
            "none": 401 if level != NONE else None,
            "wrong": 401 if level != NONE else None,
            "api": 403 if level == ADMIN else None,
            "admin": None,
        }
        for name, status in got.items():
            wanted = expected[name]
            if wanted is not None and status != wanted:
                problems.append(f"{method} {path} with {name} key: {status}, expected {wanted}")
            if wanted is None and status in (401, 403):
                problems.append(f"{method} {path} with {name} key: {status}, expected access")
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(600)  # a few thousand requests: minutes on a busy machine
def test_fuzzed_requests_get_no_server_error(surface_server: ServerProcess, tmp_path: Path) -> None:
    """schemathesis against the server's own /openapi.json: no 5xx, no response off its schema."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{surface_server.url}/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--header",
        f"Authorization: Bearer {ADMIN_KEY}",
        "--max-examples",
        "6",
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        "1",
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--suppress-health-check",
        "all",
        "--no-color",
    ]
    for path in NOT_FUZZED:
        command += ["--exclude-path", path]
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert httpx.get(f"{surface_server.url}/health").status_code == 200
