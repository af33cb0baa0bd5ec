"""A server with a request cap: the line is bounded and the overflow gets 429 + Retry-After."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from tests.support.server import API_KEY, ServerProcess


def test_requests_beyond_the_line_get_429_and_the_rest_complete(
    tiny_models: Path, tmp_path: Path
) -> None:
    config = {
        "network": {"max_concurrent_requests": 1, "max_queued_requests": 1, "metrics_auth": "none"},
        "model": {"model_dir": str(tiny_models), "model_name": "tiny-a"},
        "embeddings": {"embedding_model_name": None},
    }
    server = ServerProcess(tmp_path, config).start()
    statuses: list[int] = []
    retry_after: list[str | None] = []

    def call() -> None:
        response = httpx.post(
            f"{server.url}/v1/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={"prompt": "Hello", "max_tokens": 500, "min_tokens": 500},
            timeout=120,
        )
        statuses.append(response.status_code)
        retry_after.append(response.headers.get("retry-after"))

    try:
        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        assert httpx.get(f"{server.url}/metrics").status_code == 200  # metrics_auth: none
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [200, 200, 429, 429]
        assert retry_after.count("1") == 2
        assert httpx.get(f"{server.url}/health").status_code == 200
    finally:
        server.stop()
