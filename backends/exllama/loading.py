"""Loading helpers: blocking library calls run in a thread while their progress is yielded, and
the first import of a library that compiles its CUDA extension, announced once."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from loguru import logger

from backends.base import LoadProgress, put_threadsafe
from common.errors import UnavailableError

Progress = Callable[[int, int], None]
BUILD_POLL_SECONDS = 5.0


@dataclass(frozen=True)
class WeightsLayout:
    """How one model (the main or the draft) is loaded: its cache mode, and its split over the
    GPUs (GB per GPU, or an autosplit; under tensor parallel the split is per device)."""

    cache_mode: str
    gpu_split: tuple[float, ...]
    autosplit: bool


async def with_progress(
    model_type: str, work: Callable[[Progress], None]
) -> AsyncIterator[LoadProgress]:
    """Run ``work(callback)`` in a thread, yielding a :class:`LoadProgress` per callback.

    An exception in ``work`` is raised here. If the consumer stops early, the thread is still
    waited for, so that an unload that follows finds everything ``work`` allocated.
    """
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[LoadProgress] = asyncio.Queue()

    def callback(done: int, total: int) -> None:
        event = LoadProgress(model_type, done, total)
        put_threadsafe(loop, events, event)

    task = asyncio.ensure_future(asyncio.to_thread(work, callback))
    try:
        while not task.done() or not events.empty():
            getter = asyncio.ensure_future(events.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()
        task.result()
    finally:
        if not task.done():
            await asyncio.shield(task)


def extension_build_dir(extension: str) -> Path | None:
    """Where torch's JIT builder keeps ``extension`` (None when torch cannot say)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(extension, verbose=False))
    except Exception:
        return None


def needs_build(package: str, extension: str) -> bool:
    """True when importing ``package`` will compile ``extension`` (no prebuilt or cached copy)."""
    import torch

    if not torch.version.cuda or importlib.util.find_spec(extension) is not None:
        return False
    build_dir = extension_build_dir(extension)
    return build_dir is None or not (build_dir / f"{extension}.so").is_file()


def count_sources(package: str, extension: str) -> int:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return 0
    root = Path(next(iter(spec.submodule_search_locations))) / extension
    return sum(1 for p in root.rglob("*") if p.suffix in (".cu", ".cpp"))


def count_objects(build_dir: Path | None) -> int:
    if build_dir is None or not build_dir.is_dir():
        return 0
    return sum(1 for _ in build_dir.glob("*.o"))


_imported: dict[str, ModuleType] = {}


async def import_engine_library(
    package: str, extension: str, minutes: float
) -> AsyncIterator[LoadProgress]:
    """Import ``package`` off the event loop, showing its first-run CUDA build as progress.

    A library that compiles its extension on first import says so in one log line (once per
    process), and the load stream gets ``extension`` progress events (objects built of sources)
    while the build runs. Any import failure becomes an :class:`UnavailableError` that says why:
    ``import exllamav2`` raises ``OSError`` on a machine without CUDA, not ``ImportError``.
    """
    if package in _imported:
        return
    building = needs_build(package, extension)
    build_dir = extension_build_dir(extension)
    total = max(count_sources(package, extension), 1)
    started = time.monotonic()
    if building:
        jobs = os.environ.get("MAX_JOBS") or os.cpu_count()
        logger.info(
            f"{package}: compiling its CUDA extension {extension} (first start only, about "
            f"{minutes:g} min with {jobs} build jobs); later starts reuse it from {build_dir}"
        )
    task = asyncio.ensure_future(asyncio.to_thread(importlib.import_module, package))
    try:
        while building and not task.done():
            done, _ = await asyncio.wait({task}, timeout=BUILD_POLL_SECONDS)
            if not done:
                yield LoadProgress("extension", min(count_objects(build_dir), total - 1), total)
        module = await task
    except Exception as exc:
        raise UnavailableError(f"The {package} engine cannot start: {exc!r}") from exc
    _imported[package] = module
    if building:
        logger.info(f"{package}: CUDA extension ready in {time.monotonic() - started:.0f} s")
        yield LoadProgress("extension", total, total, "finished")
