"""STAND-IN for ExLlamaV2's / ExLlamaV3's dynamic generator, whose forward pass needs CUDA.

It has the generator's synchronous interface (``enqueue``, ``iterate``, ``cancel``,
``num_remaining_jobs``) and emits results shaped like the real ones, with a fixed token
sequence instead of a model. It exists to test Serval's own code around the generator on a
CPU machine: the worker thread, cancellation, failure recovery, clamping, result reading. The
real generator is exercised by tests/gpu/ and scripts/gpu_check.sh.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import torch


class ScriptedGenerator:
    def __init__(
        self,
        tokens: list[int],
        piece: Callable[[int], str],
        capacity: int = 1024,
        fail_on_iteration: int | None = None,
        step_seconds: float = 0.0,
    ) -> None:
        self.tokens = tokens
        self.piece = piece
        self.capacity = capacity
        self.fail_on_iteration = fail_on_iteration
        self.step_seconds = step_seconds
        self.pending: list[Any] = []
        self.active: list[Any] = []
        self.position: dict[int, int] = {}
        self.iterations = 0
        self.threads: set[str] = set()
        self.current_loras: Any = None

    def enqueue(self, job: Any) -> int:
        prompt = job.sequences[0].input_ids.torch() if hasattr(job, "sequences") else None
        prompt_len = prompt.shape[-1] if prompt is not None else 0
        if prompt_len + job.max_new_tokens > self.capacity:
            raise AssertionError("Job requires 2 pages (only 1 available)")
        self.pending.append(job)
        return len(self.pending)

    def cancel(self, job: Any) -> None:
        for queue in (self.pending, self.active):
            if job in queue:
                queue.remove(job)

    def num_remaining_jobs(self) -> int:
        return len(self.pending) + len(self.active)

    def iterate(self) -> list[dict[str, Any]]:
        self.threads.add(threading.current_thread().name)
        self.iterations += 1
        if self.step_seconds:
            time.sleep(self.step_seconds)
        if self.iterations == self.fail_on_iteration:
            raise RuntimeError("CUDA error: an illegal memory access (stand-in failure)")
        results = []
        for job in self.pending:
            self.active.append(job)
            self.position[id(job)] = 0
            results.append({"job": job, "stage": "started", "eos": False})
        self.pending = []
        for job in list(self.active):
            results.append(self._step(job))
        return results

    def _step(self, job: Any) -> dict[str, Any]:
        index = self.position[id(job)]
        token = self.tokens[index % len(self.tokens)]
        self.position[id(job)] = index + 1
        result: dict[str, Any] = {"job": job, "stage": "streaming", "eos": False}
        stop_tokens = getattr(job, "stop_tokens", set())
        token_ids = torch.tensor([[token]])
        if token in stop_tokens or index + 1 >= job.max_new_tokens:
            self.active.remove(job)
            stats = {
                "new_tokens": index + 1,
                "prompt_tokens": 3,
                "cached_tokens": 0,
                "time_enqueued": 0.0,
                "time_prefill": 0.0,
                "time_generate": 0.0,
            }
            if token in stop_tokens:
                held = {"text": self.piece(token), "token_ids": token_ids}
                return {
                    **result,
                    **stats,
                    "eos": True,
                    "eos_reason": "stop_token",
                    "eos_triggering_token_id": token,
                    "held": held,
                }
            return {
                **result,
                **stats,
                "eos": True,
                "eos_reason": "max_new_tokens",
                "text": self.piece(token),
                "token_ids": token_ids,
            }
        return {**result, "text": self.piece(token), "token_ids": token_ids}
