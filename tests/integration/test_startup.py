"""Start-up as a new user sees it: no config, the default model, a busy port."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from backends.registry import gguf_is_fastest_here
from tests.support.server import ADMIN_KEY, API_KEY, ROOT, ServerProcess, run_main

DEFAULT_MODEL = "SmolLM2-135M-Instruct"


def test_without_config_the_default_model_loads(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path, {}, keys=False)
    (tmp_path / "config.yml").unlink()  # a newcomer has no config.yml
    process.env["SERVAL_MODEL_MODEL_DIR"] = str(ROOT / "models")
    process.env["SERVAL_NETWORK_PORT"] = str(process.port)
    process.env["SERVAL_EMBEDDINGS_EMBEDDING_MODEL_DIR"] = str(ROOT / "models")
    process.start()
    try:
        assert httpx.get(f"{process.url}/health").json()["status"] == "healthy"
        keys = yaml.safe_load((tmp_path / "api_tokens.yml").read_text())
        log = process.log()
        assert "new random keys were written" in log
        for key in (keys["admin_key"], keys["api_key"]):  # never whole in the log (journald)
            assert key[:4] in log and key not in log
        assert f"http://127.0.0.1:{process.port}" in log
        assert "SmolLM2-135M-Instruct" in log
        # Without a GPU the default model runs from its GGUF file where llama.cpp runs.
        headers = {"Authorization": f"Bearer {keys['api_key']}"}
        card = httpx.get(f"{process.url}/v1/model", headers=headers).json()
        if gguf_is_fastest_here():
            assert card["id"] == "SmolLM2-135M-Instruct-GGUF"
            assert card["parameters"]["backend"] == "llamacpp"
            assert card["parameters"]["dtype"] == "Q4_1"
            assert "from its GGUF file (SmolLM2-135M-Instruct-GGUF) on llama.cpp" in log
        else:
            assert card["id"] == "SmolLM2-135M-Instruct"
        # start() polled /health while the model loaded: an expected 503, never an ERROR line.
        loading = [line for line in log.splitlines() if "GET /health 503" in line]
        assert loading and not any("ERROR" in line for line in loading), loading
    finally:
        process.stop()


def test_busy_port_exits_with_one_line(server: ServerProcess, tmp_path: Path) -> None:
    result = run_main(["--port", str(server.port)], tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "already in use" in result.stderr


def test_logging_keys_log_prompts_settings_and_requests_but_never_keys(tmp_path: Path) -> None:
    """TabbyAPI's logging section: log_prompt, log_generation_params and log_requests; keys
    that do nothing for this model are named at start (model.vision on a text model)."""
    config = {
        "network": {"api_servers": ["OAI"]},
        "logging": {"log_prompt": True, "log_generation_params": True, "log_requests": True},
        "model": {
            "model_dir": str(ROOT / "models"),
            "model_name": DEFAULT_MODEL,
            "backend": "transformers",
            "vision": True,
        },
    }
    process = ServerProcess(tmp_path, config).start()
    try:
        answer = httpx.post(
            f"{process.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}", "X-Admin-Key": ADMIN_KEY},
            json={
                "messages": [{"role": "user", "content": "Name a zebra-striped fruit."}],
                "max_tokens": 2,
                "temperature": 0,
            },
            timeout=120,
        )
        assert answer.status_code == 200
        log = process.log()
    finally:
        process.stop()
    assert "has no vision part: model.vision does nothing" in log
    request = next(line for line in log.splitlines() if "request POST /v1/chat/completions" in line)
    assert "zebra-striped fruit" in request and "authorization: <hidden>" in request
    prompt = next(line for line in log.splitlines() if " prompt 0 (" in line)
    assert "<|im_start|>user" in prompt and "zebra-striped fruit" in prompt
    params = next(line for line in log.splitlines() if "generation params" in line)
    assert "max_new_tokens=2" in params and "temperature=0" in params
    assert API_KEY not in log and ADMIN_KEY not in log
