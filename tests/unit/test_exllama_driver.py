"""The worker thread that drives an ExLlama generator, with a stand-in generator (no CUDA here).

What is tested is Serval's driver: jobs run off the event loop, cancelling a finished job is
harmless, a refused job fails alone, and a failed step fails its jobs while the next request
runs on a fresh generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from backends.exllama.driver import GeneratorDriver
from common.errors import GenerationError, UnavailableError
from tests.support.scripted_generator import ScriptedGenerator


class Collect:
    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []
        self.finished = threading.Event()

    def on_result(self, result: dict[str, Any]) -> None:
        self.results.append(result)
        if result["eos"]:
            self.finished.set()

    def on_error(self, error: BaseException) -> None:
        self.errors.append(error)
        self.finished.set()


def job(max_new_tokens: int = 3) -> SimpleNamespace:
    return SimpleNamespace(max_new_tokens=max_new_tokens, stop_tokens=set())


def make_driver(**kwargs: Any) -> tuple[GeneratorDriver, list[ScriptedGenerator]]:
    built: list[ScriptedGenerator] = []

    def make() -> ScriptedGenerator:
        generator = ScriptedGenerator([5, 6, 7], piece=str, **(kwargs if not built else {}))
        built.append(generator)
        return generator

    return GeneratorDriver(make, "test"), built


@contextlib.contextmanager
def running_driver(**kwargs: Any) -> Iterator[tuple[GeneratorDriver, list[ScriptedGenerator]]]:
    """:func:`make_driver`, stopped when the block ends."""
    driver, built = make_driver(**kwargs)
    try:
        yield driver, built
    finally:
        driver.stop()


def test_jobs_run_on_the_worker_thread_and_finish() -> None:
    with running_driver() as (driver, built):
        sinks = [Collect() for _ in range(3)]
        for sink in sinks:
            driver.submit(job(), sink)
        assert all(sink.finished.wait(5) for sink in sinks)
        for sink in sinks:
            streamed = [r for r in sink.results if r["stage"] == "streaming"]
            assert [r["text"] for r in streamed] == ["5", "6", "7"]
            assert streamed[-1]["eos"] and not sink.errors
        assert built[0].threads == {"serval-test"}


def test_cancelling_a_finished_job_is_harmless() -> None:
    with running_driver() as (driver, _):
        sink = Collect()
        handle = driver.submit(job(1), sink)
        assert sink.finished.wait(5)
        driver.cancel(handle)
        driver.cancel(handle)
        again = Collect()
        driver.submit(job(2), again)
        assert again.finished.wait(5) and not again.errors


def test_a_refused_job_fails_alone() -> None:
    with running_driver(capacity=10) as (driver, _):
        refused, fine = Collect(), Collect()
        driver.submit(job(50), refused)
        driver.submit(job(2), fine)
        assert refused.finished.wait(5) and fine.finished.wait(5)
        assert isinstance(refused.errors[0], GenerationError)
        assert "refused" in str(refused.errors[0])
        assert not fine.errors and fine.results[-1]["eos"]


def test_a_failed_step_fails_its_jobs_and_the_next_job_gets_a_fresh_generator() -> None:
    with running_driver(fail_on_iteration=2) as (driver, built):
        first = Collect()
        driver.submit(job(10), first)
        assert first.finished.wait(5)
        assert isinstance(first.errors[0], GenerationError)
        assert "illegal memory access" in str(first.errors[0])
        second = Collect()
        driver.submit(job(3), second)
        assert second.finished.wait(5) and not second.errors
        assert len(built) == 2 and built[1].iterations > 0


def test_idle_tasks_wait_for_running_jobs() -> None:
    with running_driver(step_seconds=0.02) as (driver, _built):
        sink = Collect()
        driver.submit(job(5), sink)
        seen = driver.when_idle(lambda generator: generator.num_remaining_jobs()).result(5)
        assert seen == 0 and sink.finished.is_set()


def test_stopping_fails_running_jobs_and_refuses_new_ones() -> None:
    driver, _ = make_driver(step_seconds=0.05)
    sink = Collect()
    driver.submit(job(1000), sink)
    driver.stop()
    assert sink.finished.wait(5)
    assert isinstance(sink.errors[0], UnavailableError)
    with pytest.raises(UnavailableError):
        driver.submit(job(), Collect())


def test_the_event_loop_stays_free_while_the_generator_works() -> None:
    async def ticks_while_it_works(driver: GeneratorDriver) -> int:
        sink = Collect()
        driver.submit(job(2), sink)
        ticks = 0
        while not sink.finished.is_set():
            await asyncio.sleep(0.01)
            ticks += 1
        return ticks

    with running_driver(step_seconds=0.2) as (driver, _):
        assert asyncio.run(ticks_while_it_works(driver)) > 10
