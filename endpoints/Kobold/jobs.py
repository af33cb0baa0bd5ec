"""Running Kobold generations by genkey: text so far for /check, and /abort that ends the job.

Each generation runs in its own task, which feeds a :class:`KoboldJob`; a streamed answer reads
its updates and a blocking answer waits for it, so another request can read its text or abort it.
Aborting cancels the task, which closes the engine's iterator and so cancels the engine job.

A genkey belongs to the key that started it: jobs are filed under a hash of the caller's key, so
another key neither sees nor stops them. Finished jobs are kept a short while for a late /check,
and only so many of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from backends.base import GenerationChunk
from common.errors import ConflictError
from common.generation import Completion

Update = tuple[int, GenerationChunk]


def owner_of(key: str) -> str:
    """What jobs are filed under for the caller with ``key`` (never the key itself)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KoboldJob:
    """One generation (``count`` texts) and what it produced so far."""

    def __init__(
        self, owner: str, genkey: str, count: int, stream: bool, logprobs: bool = False
    ) -> None:
        self.owner = owner
        self.genkey = genkey
        self.logprobs = logprobs  # the request asked for them (kept for /api/extra/last_logprobs)
        self.completions = [Completion() for _ in range(count)]
        self.error: Exception | None = None
        self.aborted = False
        self.finished_at: float | None = None
        self._stream = stream
        self._updates: asyncio.Queue[Update | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.finished_at is None

    def start(self, chunks: AsyncGenerator[Update], on_end: Callable[[], None]) -> None:
        """Run ``chunks`` in a task; ``on_end`` runs once it has ended, however it ended."""

        def ended(_: asyncio.Task[None]) -> None:
            self.finished_at = time.monotonic()
            self._updates.put_nowait(None)
            on_end()

        self._task = asyncio.create_task(self._pump(chunks), name=f"kobold-{self.genkey}")
        self._task.add_done_callback(ended)

    async def _pump(self, chunks: AsyncGenerator[Update]) -> None:
        async with contextlib.aclosing(chunks):
            try:
                async for index, chunk in chunks:
                    self.completions[index].add(chunk)
                    if self._stream:
                        self._updates.put_nowait((index, chunk))
            except Exception as exc:  # reported to whoever waits for or streams this job
                self.error = exc

    async def updates(self) -> AsyncIterator[Update]:
        """Chunks as they come (for a streamed answer), until the job ends."""
        while (update := await self._updates.get()) is not None:
            yield update

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.wait([self._task])

    def cancel(self) -> None:
        """Stop the job without waiting (its client went away)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def abort(self) -> bool:
        """Stop the job and wait until it has ended; False when it had already ended."""
        if self._task is None or self._task.done():
            return False
        self.aborted = True
        self._task.cancel()
        await self.wait()
        return True


class JobRegistry:
    """Jobs by (owner, genkey): running ones until they end, finished ones for a short while."""

    def __init__(self, keep_seconds: float = 30.0, max_finished: int = 256) -> None:
        self.keep_seconds = keep_seconds
        self.max_finished = max_finished
        self._jobs: dict[tuple[str, str], KoboldJob] = {}

    def open(
        self, owner: str, genkey: str, count: int, stream: bool, logprobs: bool = False
    ) -> KoboldJob:
        """A new job; a finished one with the same genkey is replaced, a running one is a 409."""
        self._prune()
        current = self._jobs.pop((owner, genkey), None)
        if current is not None and current.running:
            self._jobs[(owner, genkey)] = current
            raise ConflictError(
                f"A generation with genkey {genkey!r} is still running.", param="genkey"
            )
        job = KoboldJob(owner, genkey, count, stream, logprobs)
        self._jobs[(owner, genkey)] = job
        return job

    def find(self, owner: str, genkey: str | None) -> list[KoboldJob]:
        """The caller's job with ``genkey``, or (no genkey) all the caller's jobs, oldest first."""
        self._prune()
        if genkey:
            job = self._jobs.get((owner, genkey))
            return [job] if job is not None else []
        return [job for (job_owner, _), job in self._jobs.items() if job_owner == owner]

    def __len__(self) -> int:
        return len(self._jobs)

    def _prune(self) -> None:
        now = time.monotonic()
        finished = sorted(
            (job.finished_at, key) for key, job in self._jobs.items() if job.finished_at is not None
        )
        excess = len(finished) - self.max_finished
        for index, (finished_at, key) in enumerate(finished):
            if index < excess or now - finished_at > self.keep_seconds:
                del self._jobs[key]
