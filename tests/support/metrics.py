"""Reading the server's Prometheus metrics in tests."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import API_KEY


def metric(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The summed value of samples called ``name`` (matching ``labels``) at ``url``."""
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                total += sample.value
    return total


def wait_until_idle(url: str, timeout: float = 1.0) -> bool:
    """True once the engine runs and queues no job, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        busy = metric(url, "serval_running_jobs") + metric(url, "serval_queued_jobs")
        if busy == 0:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
