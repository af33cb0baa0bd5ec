"""Prometheus metrics: what a user's dashboard needs, counted for real."""

from __future__ import annotations

import httpx

from tests.support.metrics import metric
from tests.support.server import ServerProcess


def test_metrics_need_a_key_by_default(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/metrics").status_code == 401


def test_requests_tokens_and_latencies_are_counted(server: ServerProcess) -> None:
    route = {"route": "/v1/completions", "status": "200"}
    before_requests = metric(server.url, "serval_requests_total", route)
    before_tokens = metric(server.url, "serval_generated_tokens_total")
    before_prompt = metric(server.url, "serval_prompt_tokens_total")
    before_ttft = metric(server.url, "serval_time_to_first_token_seconds_count")
    with server.client() as client:
        body = {"prompt": "One two three", "max_tokens": 5, "min_tokens": 5}
        assert client.post("/v1/completions", json=body).status_code == 200
    assert metric(server.url, "serval_requests_total", route) == before_requests + 1
    assert metric(server.url, "serval_generated_tokens_total") == before_tokens + 5
    assert metric(server.url, "serval_prompt_tokens_total") == before_prompt + 3
    assert metric(server.url, "serval_time_to_first_token_seconds_count") == before_ttft + 1
    assert metric(server.url, "serval_time_per_output_token_seconds_count") > 0
    assert metric(server.url, "serval_model_load_seconds") > 0
    assert metric(server.url, "serval_running_jobs") == 0
    assert metric(server.url, "serval_queued_jobs") == 0
    assert metric(server.url, "serval_waiting_requests") == 0


def test_refusals_are_counted_by_status(server: ServerProcess) -> None:
    labels = {"route": "/v1/completions", "status": "400"}
    before = metric(server.url, "serval_requests_total", labels)
    with server.client() as client:
        assert client.post("/v1/completions", json={"prompt": "x", "n": 0}).status_code == 400
    assert metric(server.url, "serval_requests_total", labels) == before + 1
