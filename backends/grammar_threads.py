"""llguidance work on threads with a large, known stack, and a time bound on every piece.

llguidance's grammar compiler recurses once per chained rule (``r0: r1``, ``r1: r2``, ...) and
per chained ``$ref``: about 3 KiB of native stack each (measured on 1.9.1: an 8 MiB thread
overflows near 2,700 chained rules, and a stack overflow kills the whole process, with no log
line). So every grammar compile, validation and matcher construction in Serval runs here, on
threads whose stack is :data:`STACK_BYTES` (reserved address space, touched only as deep as the
recursion goes). The size and rule limits in ``common/grammar.py`` keep every grammar that
reaches llguidance far below what that stack survives (figures in docs/security.md, "Grammars
and chat templates"); ``tests/unit/test_grammar_bounds.py`` proves the worst case at the largest
allowed settings in a subprocess.

Grammar work never runs on the compute thread or the default thread pool, so a costly grammar
neither stalls a batch step nor starves model loads. A caller that waits longer than its
timeout gets a :class:`~common.errors.GrammarError`; the work itself cannot be interrupted, but
llguidance's fuel limits (:func:`parser_limits`) end it soon after.
"""

from __future__ import annotations

import asyncio
import functools
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

import llguidance

from common.errors import GrammarError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

STACK_BYTES = 512 << 20
# Grammar work takes at most half the cores (one on a 2-core machine), so the compute thread
# always has the rest: a costly grammar slows grammar requests, never everyone.
WORKERS = max(1, min(4, (os.cpu_count() or 2) // 2))


# Bounds inside llguidance (its defaults, tightened). The step limits bound the time of one
# mask computation: a grammar that needs more fails its own job, never the batch. The initial
# fuel bounds the lexer work of a matcher's first mask (paid on a grammar thread, see
# build_matcher): measured on 2 busy cores, 1,000,000 (llguidance's default) let one regex
# (``a{1000000}``) take 2.2 s; 200,000 takes 0.3 s, and every grammar Serval writes fits.
def parser_limits() -> llguidance.LLParserLimits:
    return llguidance.LLParserLimits(
        max_items_in_row=2000,
        initial_lexer_fuel=200_000,
        step_lexer_fuel=200_000,
        step_max_items=50_000,
        max_lexer_states=50_000,
        max_grammar_size=200_000,
        verbose_errors=False,
    )


_Job = tuple[Future[Any], Callable[[], Any]]


class BigStackPool:
    """A fixed set of daemon threads with ``stack_bytes`` of stack each, fed from one queue."""

    _stack_lock = threading.Lock()  # threading.stack_size is process-wide: set it for ours only

    def __init__(self, workers: int, stack_bytes: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True)
            for index in range(workers)
        ]
        with self._stack_lock:
            previous = threading.stack_size(stack_bytes)
            try:
                for thread in self.threads:
                    thread.start()
            finally:
                threading.stack_size(previous)

    def submit(self, work: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((future, functools.partial(work, *args)))
        return future

    def _work(self) -> None:
        while True:
            future, work = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up (timeout or disconnect) before it started
            try:
                result = work()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)


@functools.cache
def pool() -> BigStackPool:
    """The process's grammar threads, started on first use."""
    return BigStackPool(WORKERS, STACK_BYTES, "serval-grammar")


async def run(work: Callable[..., T], *args: Any, timeout: float, what: str = "grammar") -> T:
    """``work(*args)`` on a grammar thread; a :class:`GrammarError` after ``timeout`` seconds.

    Cancelling the caller (a client that disconnects) drops the work if it has not started,
    and its result if it has.
    """
    future = pool().submit(work, *args)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
    except TimeoutError:
        future.cancel()
        raise GrammarError(
            f"The {what} took longer than {timeout:g} s to compile (limits.grammar_timeout).",
            code="grammar_timeout",
        ) from None


def build_matcher(tokenizer: llguidance.LLTokenizer, grammar: str) -> llguidance.LLMatcher:
    """A matcher for ``grammar``, with its first mask already computed. Call it through
    :func:`run`: the first mask builds the lexer's initial state, which for a costly grammar
    is most of the work, so it is paid here and not in a batch step."""
    matcher = llguidance.LLMatcher(tokenizer, grammar, limits=parser_limits())
    if not matcher.is_error():
        matcher.compute_bitmask()
    if matcher.is_error():
        raise GrammarError(f"The grammar cannot be used: {matcher.get_error()}")
    return matcher


def fit_mask(allowed: torch.Tensor, width: int) -> torch.Tensor:
    """A bool per token of a ``width``-wide logits row: ids past ``allowed`` are not allowed."""
    import torch

    if allowed.numel() < width:
        allowed = torch.cat([allowed, torch.zeros(width - allowed.numel(), dtype=torch.bool)])
    return allowed[:width]


def allowed_tokens(matcher: llguidance.LLMatcher, width: int) -> torch.Tensor:
    """The tokens ``matcher``'s grammar allows next, a bool per token of a ``width``-wide row
    (llguidance packs them 32 to a word, lowest bit first)."""
    import torch

    packed = torch.frombuffer(bytearray(matcher.compute_bitmask()), dtype=torch.uint8)
    bits = torch.stack([(packed >> i) & 1 for i in range(8)], dim=1).flatten().bool()
    return fit_mask(bits, width)
