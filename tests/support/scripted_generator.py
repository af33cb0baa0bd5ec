"""STAND-IN for ExLlamaV2's / ExLlamaV3's dynamic generator, whose forward pass needs CUDA.

It has the generator's synchronous interface (``enqueue``, ``iterate``, ``cancel``,
``num_remaining_jobs``, LoRA and page-table resets) and emits results shaped like the real ones,
with a fixed token sequence instead of a model. What the real generator does around the forward
pass it does too: it stops on the job's stop tokens and stop strings (holding back text that may
start a stop string), ends drafting jobs ``draft_tokens`` early as ExLlamaV2 does, applies the
job's grammar filters (the scripted token when the filter allows it, else the lowest allowed
id), and returns logits when the job asks, shaped so the chosen token is the most likely one.
It exists to test Serval's own code around the generator on a CPU machine: the worker thread,
cancellation, failure recovery, clamping, result reading, and the HTTP path on top. Real logits
come only from tests/gpu/ and scripts/gpu_check.sh.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch


@dataclass
class _Progress:
    """One running job: how many tokens it has, the text it produced and what it emitted."""

    tokens: int = 0
    text: str = ""
    emitted: int = 0


class ScriptedGenerator:
    def __init__(
        self,
        tokens: list[int],
        piece: Callable[[int], str],
        capacity: int = 1024,
        fail_on_iteration: int | None = None,
        step_seconds: float = 0.0,
        vocab_size: int | None = None,
        draft_tokens: int = 0,
    ) -> None:
        self.tokens = tokens
        self.piece = piece
        self.capacity = capacity
        self.fail_on_iteration = fail_on_iteration
        self.step_seconds = step_seconds
        self.vocab_size = vocab_size or max(tokens) + 1
        self.draft_tokens = draft_tokens
        self.pending: list[Any] = []
        self.active: list[Any] = []
        self.progress: dict[int, _Progress] = {}
        self.iterations = 0
        self.threads: set[str] = set()
        self.current_loras: Any = None
        self.page_table_resets = 0
        self.pagetable = SimpleNamespace(reset_page_table=self.reset_page_table)  # ExLlamaV3

    # ----- the generator's interface ----------------------------------------------------------

    def enqueue(self, job: Any) -> int:
        if prompt_length(job) + job.max_new_tokens > self.capacity:
            raise AssertionError("Job requires 2 pages (only 1 available)")
        self.pending.append(job)
        return len(self.pending)

    def cancel(self, job: Any) -> None:
        for queue in (self.pending, self.active):
            if job in queue:
                queue.remove(job)

    def num_remaining_jobs(self) -> int:
        return len(self.pending) + len(self.active)

    def set_loras(self, loras: list[Any] | None) -> None:  # ExLlamaV2
        self.current_loras = loras

    def reset_page_table(self) -> None:
        self.page_table_resets += 1

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
            self.progress[id(job)] = _Progress()
            results.append({"job": job, "stage": "started", "eos": False})
        self.pending = []
        for job in list(self.active):
            results.append(self._step(job))
        return results

    # ----- one token of one job ---------------------------------------------------------------

    def _choose(self, job: Any, index: int) -> int:
        token = self.tokens[index % len(self.tokens)]
        filters = getattr(job, "filters", None) or []
        if not filters:
            return token
        allowed = torch.ones(self.vocab_size, dtype=torch.bool)
        for grammar in filters:
            grammar.prepare_logit_mask()
            allowed &= torch.isfinite(grammar.mask_logits(torch.zeros(self.vocab_size)))
        chosen = token if allowed[token] else int(allowed.nonzero()[0])
        for grammar in filters:
            grammar.feed(torch.tensor([[chosen]]))
        return chosen

    def _logits(self, token: int) -> torch.Tensor:
        """A row where ``token`` is the most likely token and the next id the second."""
        row = torch.full((1, 1, self.vocab_size), -4.0)
        row[0, 0, (token + 1) % self.vocab_size] = 1.0
        row[0, 0, token] = 3.0
        return row

    def _step(self, job: Any) -> dict[str, Any]:
        state = self.progress[id(job)]
        token = self._choose(job, state.tokens)
        state.tokens += 1
        result: dict[str, Any] = {"job": job, "stage": "streaming", "eos": False}
        token_ids = torch.tensor([[token]])
        logits = {"logits": self._logits(token)} if getattr(job, "return_logits", False) else {}
        stats = {
            "new_tokens": state.tokens,
            "prompt_tokens": prompt_length(job),
            "cached_tokens": 0,
            "time_enqueued": 0.0,
            "time_prefill": 0.0,
            "time_generate": 0.0,
        }
        if token in getattr(job, "stop_tokens", set()):
            self.active.remove(job)
            held = {"text": state.text[state.emitted :] + self.piece(token)}
            held |= {"token_ids": token_ids, **logits}
            return {
                **result,
                **stats,
                "eos": True,
                "eos_reason": "stop_token",
                "eos_triggering_token_id": token,
                "held": held,
            }
        state.text += self.piece(token)
        stop, cut = first_stop(state.text, getattr(job, "stop_strings", set()))
        if stop is not None:
            self.active.remove(job)
            text = state.text[state.emitted : cut]
            return {
                **result,
                **stats,
                "eos": True,
                "eos_reason": "stop_string",
                "eos_triggering_string": stop,
                "text": text,
                "token_ids": token_ids,
                **logits,
            }
        if state.tokens >= job.max_new_tokens - self.draft_tokens:
            self.active.remove(job)
            text = state.text[state.emitted :]
            return {
                **result,
                **stats,
                "eos": True,
                "eos_reason": "max_new_tokens",
                "text": text,
                "token_ids": token_ids,
                **logits,
            }
        ready = len(state.text) - held_back(state.text, getattr(job, "stop_strings", set()))
        text, state.emitted = state.text[state.emitted : ready], max(ready, state.emitted)
        return {**result, "text": text, "token_ids": token_ids, **logits}


def prompt_length(job: Any) -> int:
    if hasattr(job, "sequences"):  # ExLlamaV2's job
        return int(job.sequences[0].input_ids.torch().shape[-1])
    ids = getattr(job, "input_ids", None)  # the ExLlamaV3 stand-in's job
    return int(ids.shape[-1]) if ids is not None else 0


def first_stop(text: str, stops: set[str]) -> tuple[str | None, int]:
    """The stop string that appears first in ``text`` and where it starts."""
    found = [(text.index(s), s) for s in stops if s in text]
    if not found:
        return None, len(text)
    at, stop = min(found)
    return stop, at


def held_back(text: str, stops: set[str]) -> int:
    """How many characters at the end of ``text`` could be the start of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                longest = max(longest, size)
                break
    return longest
