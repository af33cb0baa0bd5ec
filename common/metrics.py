"""Prometheus metrics: requests, jobs, tokens and latencies, in a registry per server."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from backends.base import GenerationStats

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class LastJob:
    """The job that finished last (KoboldCpp's /api/extra/perf reports it)."""

    stats: GenerationStats
    finish_reason: str | None
    stop_reason: str | int | None
    seed: int | None
    ended_at: float


class Metrics:
    """Every metric Serval exports; one instance per app so tests can run several servers."""

    def __init__(self) -> None:
        self.last_job: LastJob | None = None
        self.finished_jobs = 0
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "serval_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "serval_request_duration_seconds",
            "Time to answer a request, streams included",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.running_jobs = Gauge("serval_running_jobs", "Jobs the engine runs now", registry=r)
        self.queued_jobs = Gauge("serval_queued_jobs", "Jobs waiting for the engine", registry=r)
        self.waiting_requests = Gauge(
            "serval_waiting_requests", "Requests waiting for a generation slot", registry=r
        )
        self.prompt_tokens = Counter("serval_prompt_tokens", "Prompt tokens processed", registry=r)
        self.generated_tokens = Counter("serval_generated_tokens", "Tokens generated", registry=r)
        self.cached_tokens = Counter(
            "serval_cached_tokens", "Prompt tokens served from the cache", registry=r
        )
        self.ttft = Histogram(
            "serval_time_to_first_token_seconds",
            "Time from a job's start to its first token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.token_latency = Histogram(
            "serval_time_per_output_token_seconds",
            "Mean time between generated tokens, per job",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "serval_model_load_seconds", "How long the last model load took", registry=r
        )
        self.jobs_cancelled = Counter(
            "serval_jobs_cancelled", "Jobs cancelled before they finished", registry=r
        )

    def watch_engine(self, running: Callable[[], float], queued: Callable[[], float]) -> None:
        self.running_jobs.set_function(running)
        self.queued_jobs.set_function(queued)

    def job_finished(
        self,
        stats: GenerationStats,
        finish_reason: str | None = None,
        stop_reason: str | int | None = None,
        seed: int | None = None,
    ) -> None:
        self.last_job = LastJob(stats, finish_reason, stop_reason, seed, time.time())
        self.finished_jobs += 1
        self.prompt_tokens.inc(stats.prompt_tokens)
        self.generated_tokens.inc(stats.completion_tokens)
        self.cached_tokens.inc(stats.cached_tokens)
        self.ttft.observe(stats.queue_time + stats.prefill_time)
        if stats.completion_tokens > 1:
            self.token_latency.observe(stats.generate_time / (stats.completion_tokens - 1))

    def request_done(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.request_seconds.labels(route=route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
