"""Runs an ExLlama dynamic generator on one worker thread, off the event loop.

The async wrappers shipped with ExLlamaV2 run every forward pass on the event-loop thread, end
their iteration task for good on the first exception, assert when a finished job is cancelled,
and spin on a job the generator refused. This driver replaces them for both libraries: the
event loop only puts commands in a queue; the worker enqueues jobs, calls ``iterate()``, hands
each result to its job's :class:`JobSink`, tolerates cancelling finished jobs, and when
``iterate()`` fails it fails the jobs that were running and builds a fresh generator, so the
next request works without a restart.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from loguru import logger

from common.errors import GenerationError, UnavailableError


class JobSink(Protocol):
    """Where the results of one job go; called on the worker thread."""

    def on_result(self, result: dict[str, Any]) -> None: ...

    def on_error(self, error: BaseException) -> None: ...


@dataclass(eq=False)
class JobHandle:
    job: Any
    sink: JobSink
    started: bool = False
    done: bool = False


@dataclass
class _Command:
    kind: str
    handle: JobHandle | None = None
    task: Callable[[Any], Any] | None = None
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)


class GeneratorDriver:
    """Owns one generator (built by ``make_generator``) and the thread that iterates it."""

    def __init__(self, make_generator: Callable[[], Any], name: str) -> None:
        self._make_generator = make_generator
        self.generator: Any = make_generator()
        self._broken: BaseException | None = None
        self._inbox: queue.Queue[_Command] = queue.Queue()
        self._jobs: dict[int, JobHandle] = {}
        self._idle_tasks: list[_Command] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"serval-{name}", daemon=True)
        self._thread.start()

    # ----- called from the event loop -------------------------------------------------------

    def submit(self, job: Any, sink: JobSink) -> JobHandle:
        if self._stopping:
            raise UnavailableError("The model is being unloaded.")
        if self._broken is not None:
            raise UnavailableError(
                f"The generator failed and could not be restarted ({self._broken}); "
                "load the model again."
            )
        handle = JobHandle(job, sink)
        self._inbox.put(_Command("enqueue", handle))
        return handle

    def cancel(self, handle: JobHandle) -> None:
        """Stop a job; harmless when it has already finished."""
        if not handle.done:
            self._inbox.put(_Command("cancel", handle))

    def cancel_all(self) -> None:
        self._inbox.put(_Command("cancel_all"))

    def when_idle(self, task: Callable[[Any], Any]) -> concurrent.futures.Future[Any]:
        """Run ``task(generator)`` on the worker once no job is queued or running."""
        command = _Command("idle", task=task)
        self._inbox.put(command)
        return command.future

    def stop(self) -> None:
        self._stopping = True
        self._inbox.put(_Command("stop"))
        self._thread.join(timeout=60)

    @property
    def running(self) -> int:
        return sum(1 for handle in list(self._jobs.values()) if handle.started)

    @property
    def queued(self) -> int:
        return len(self._jobs) - self.running + self._inbox.qsize()

    # ----- worker thread --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            self._take_commands(block=not self._jobs)
            if self._stopping:
                break
            if not self._jobs:
                self._run_idle_tasks()
                continue
            try:
                results = self.generator.iterate()
            except Exception as exc:
                self._recover(exc)
                continue
            for result in results:
                self._deliver(result)
        self._fail_all(UnavailableError("The model was unloaded while this request ran."))
        for command in self._idle_tasks:
            command.future.set_exception(UnavailableError("The model was unloaded."))

    def _take_commands(self, block: bool) -> None:
        try:
            command = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            self._apply(command)
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _apply(self, command: _Command) -> None:
        handle = command.handle
        if command.kind == "enqueue" and handle is not None:
            self._enqueue(handle)
        elif command.kind == "cancel" and handle is not None:
            self._cancel(handle)
        elif command.kind == "cancel_all":
            for job_handle in list(self._jobs.values()):
                self._cancel(job_handle)
        elif command.kind == "idle":
            self._idle_tasks.append(command)

    def _enqueue(self, handle: JobHandle) -> None:
        if self._broken is not None:
            handle.done = True
            handle.sink.on_error(UnavailableError("The generator failed; load the model again."))
            return
        try:
            self.generator.enqueue(handle.job)
        except Exception as exc:  # refused before it entered the queue: only this job fails
            logger.warning(f"the generator refused a job: {exc!r}")
            handle.done = True
            handle.sink.on_error(GenerationError(f"The generator refused the job: {exc}"))
            return
        self._jobs[id(handle.job)] = handle

    def _cancel(self, handle: JobHandle) -> None:
        if self._jobs.pop(id(handle.job), None) is None:
            return
        handle.done = True
        try:
            self.generator.cancel(handle.job)
        except Exception:
            logger.exception("cancelling a job failed")

    def _deliver(self, result: dict[str, Any]) -> None:
        handle = self._jobs.get(id(result.get("job")))
        if handle is None:  # cancelled while the step ran
            return
        handle.started = True
        if result.get("eos"):
            handle.done = True
            del self._jobs[id(handle.job)]
        try:
            handle.sink.on_result(result)
        except Exception as exc:  # reading one job's result must not stop the others
            logger.exception("reading a job's result failed")
            handle.sink.on_error(GenerationError(f"Generation failed: {exc}"))
            self._cancel(handle)

    def _run_idle_tasks(self) -> None:
        tasks, self._idle_tasks = self._idle_tasks, []
        for command in tasks:
            assert command.task is not None
            try:
                command.future.set_result(command.task(self.generator))
            except Exception as exc:
                command.future.set_exception(exc)

    def _recover(self, error: Exception) -> None:
        """A failed step fails the jobs it ran; the next job gets a fresh generator."""
        logger.opt(exception=error).error("the generator failed; restarting it")
        self._fail_all(GenerationError(f"Generation failed: {error}"))
        old = self.generator
        for cleanup in ("clear_queue", "close"):
            try:
                getattr(old, cleanup, lambda: None)()
            except Exception:
                logger.debug(f"{cleanup}() on the failed generator raised", exc_info=True)
        try:
            self.generator = self._make_generator()
        except Exception as exc:
            logger.exception("the generator could not be restarted")
            self._broken = exc

    def _fail_all(self, error: BaseException) -> None:
        handles, self._jobs = list(self._jobs.values()), {}
        for handle in handles:
            handle.done = True
            handle.sink.on_error(error)
