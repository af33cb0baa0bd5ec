"""One thread for all CPU tensor work in the process.

PyTorch's OpenMP runtime keeps a team of worker threads for each thread that calls into it. Once
two threads own teams, there are more OpenMP threads than cores on a small machine, so the runtime
stops letting idle workers spin and every parallel region pays to wake them: measured on 2 cores,
greedy decoding of the default model fell from about 45 to about 30 tokens/s. So every engine
(generation, loading, LoRAs, embeddings) runs its tensor work here, one task at a time, in the
order it was submitted; long jobs are split into steps so that others get their turn between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serval-compute")


def submit(work: Callable[..., T], *args: Any) -> Future[T]:
    """Queue ``work(*args)`` on the compute thread."""
    return _EXECUTOR.submit(work, *args)


async def run(work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` on the compute thread, awaited without blocking the event loop."""
    return await asyncio.wrap_future(submit(work, *args))
