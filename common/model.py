"""The model container: the one loaded model, its template, and the lock around loads.

Loads and unloads are serialised by one lock. Generation requests that arrive while a load or
unload runs wait for it to end and then run on whatever is loaded, or get 503 when nothing is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from loguru import logger

from backends.base import (
    DraftOptions,
    Engine,
    GenerationChunk,
    GenerationRequest,
    LoadOptions,
    LoadProgress,
)
from backends.registry import choose_backend, create_engine
from common.admission import Admission
from common.config import ModelConfig, ServalConfig
from common.errors import BadRequestError, ServalError, UnavailableError
from common.metrics import Metrics
from common.model_files import check_model_folder, resolve_model_folder
from common.templating import ChatTemplate, find_model_template

LOAD_KEYS = (
    "backend",
    "max_seq_len",
    "cache_size",
    "cache_mode",
    "max_batch_size",
    "chunk_size",
    "rope_scale",
    "rope_alpha",
    "gpu_split_auto",
    "autosplit_reserve",
    "gpu_split",
    "tensor_parallel",
    "dtype",
    "prompt_template",
)
DRAFT_KEYS = (
    "draft_model_name",
    "draft_mode",
    "draft_rope_scale",
    "draft_rope_alpha",
    "draft_cache_mode",
    "draft_gpu_split",
    "draft_num_tokens",
)


def _folder_defaults(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``model:`` and ``draft_model:`` sections of a model folder's tabby_config.yml."""
    file = path / "tabby_config.yml"
    if not file.is_file():
        return {}, {}
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BadRequestError(f"{file} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequestError(f"{file} must hold model: and draft_model: sections")
    return dict(data.get("model") or {}), dict(data.get("draft_model") or {})


@dataclass
class LoadPlan:
    """A checked load: settings merged from config, request and the folder's own defaults."""

    name: str
    path: Path
    settings: dict[str, Any]
    draft: dict[str, Any]
    backend: str
    options: LoadOptions
    template: ChatTemplate | None = field(compare=False)


class ModelContainer:
    def __init__(self, config: ServalConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.admission = Admission(
            config.network.max_concurrent_requests, config.network.max_queued_requests
        )
        self.metrics.waiting_requests.set_function(lambda: self.admission.waiting)
        self.metrics.watch_engine(
            lambda: self.engine.active_jobs if self.engine else 0,
            lambda: self.engine.queued_jobs if self.engine else 0,
        )
        self.engine: Engine | None = None
        self.template: ChatTemplate | None = None
        self.plan: LoadPlan | None = None
        self.load_seconds: float | None = None
        self._lock = asyncio.Lock()
        self._settled = asyncio.Event()
        self._settled.set()
        self._users = 0

    @property
    def model_dir(self) -> Path:
        return Path(self.config.model.model_dir)

    @property
    def loading(self) -> bool:
        return not self._settled.is_set()

    @property
    def name(self) -> str | None:
        return self.plan.name if self.engine is not None and self.plan else None

    def plan_load(
        self, name: str, request: dict[str, Any] | None = None, draft: dict[str, Any] | None = None
    ) -> LoadPlan:
        """Check a load of ``name`` before anything is unloaded, and merge its settings.

        Settings: config < request < the folder's tabby_config.yml. With ``request`` None
        (start-up) every model key of the config applies; for API loads only the keys listed in
        ``model.use_as_default`` do. Raises 4xx errors for names, folders, engines and templates
        that cannot work.
        """
        path = resolve_model_folder(self.model_dir, name)
        model_config: ModelConfig = self.config.model
        if request is None:
            settings = {key: getattr(model_config, key) for key in LOAD_KEYS}
        else:
            settings = {
                key: getattr(model_config, key)
                for key in model_config.use_as_default
                if key in LOAD_KEYS
            }
            settings.update({k: v for k, v in request.items() if k in LOAD_KEYS and v is not None})
        folder_model, folder_draft = _folder_defaults(path)
        settings.update({k: v for k, v in folder_model.items() if k in LOAD_KEYS})
        draft_settings = {
            key: getattr(self.config.draft_model, key)
            for key in DRAFT_KEYS
            if request is None or key in model_config.use_as_default
        }
        draft_settings.update({k: v for k, v in (draft or {}).items() if v is not None})
        draft_settings.update({k: v for k, v in folder_draft.items() if k in DRAFT_KEYS})
        check_model_folder(path)
        return LoadPlan(
            name=name,
            path=path,
            settings=settings,
            draft=draft_settings,
            backend=choose_backend(settings.get("backend"), path),
            options=self._options(name, path, settings, draft_settings),
            template=find_model_template(path, settings.get("prompt_template")),
        )

    def _draft_options(self, draft: dict[str, Any]) -> DraftOptions | None:
        mode = draft.get("draft_mode", "model")
        if mode == "ngram":
            return DraftOptions(
                path=None, mode="ngram", num_tokens=draft.get("draft_num_tokens", 4)
            )
        name = draft.get("draft_model_name")
        if mode == "disabled" or not name:
            return None
        base = Path(self.config.draft_model.draft_model_dir)
        return DraftOptions(
            path=resolve_model_folder(base, name, what="draft_model_name"),
            rope_scale=draft.get("draft_rope_scale", 1.0),
            rope_alpha=draft.get("draft_rope_alpha"),
            cache_mode=draft.get("draft_cache_mode", "FP16"),
            gpu_split=tuple(draft.get("draft_gpu_split") or ()),
            num_tokens=draft.get("draft_num_tokens", 4),
        )

    def _options(
        self, name: str, path: Path, s: dict[str, Any], draft: dict[str, Any]
    ) -> LoadOptions:
        return LoadOptions(
            path=path,
            name=name,
            max_seq_len=s.get("max_seq_len"),
            cache_size=s.get("cache_size"),
            cache_mode=s.get("cache_mode") or "FP16",
            max_batch_size=s.get("max_batch_size"),
            chunk_size=s.get("chunk_size") or 2048,
            rope_scale=s.get("rope_scale") or 1.0,
            rope_alpha=s.get("rope_alpha"),
            gpu_split_auto=s.get("gpu_split_auto", True),
            autosplit_reserve=tuple(s.get("autosplit_reserve") or (96,)),
            gpu_split=tuple(s.get("gpu_split") or ()),
            tensor_parallel=bool(s.get("tensor_parallel")),
            dtype=s.get("dtype") or "auto",
            draft=self._draft_options(draft),
        )

    async def load(self, plan: LoadPlan, skip_queue: bool = False) -> AsyncIterator[LoadProgress]:
        """Load ``plan``'s model, replacing the current one; yields progress events.

        A folder that cannot be a model is refused before the current model is touched. If the
        new model fails to load, the previous one is loaded again.
        """
        async with self._lock:
            if self.engine is not None and self.plan == plan:
                yield LoadProgress("model", 1, 1, "finished")
                return
            self._settled.clear()
            previous = self.plan
            try:
                await self._drain(skip_queue)
                await self._unload_engine()
                started = time.perf_counter()
                engine = create_engine(plan.backend, plan.options)
                try:
                    async for progress in engine.load():
                        yield progress
                except BaseException:
                    await engine.unload()
                    raise
                self.engine, self.template, self.plan = engine, plan.template, plan
                self.load_seconds = time.perf_counter() - started
                self.metrics.model_load_seconds.set(self.load_seconds)
            except ServalError as exc:
                logger.error(f"loading {plan.name} failed: {exc.message}")
                await self._restore(previous)
                raise
            except Exception as exc:
                logger.exception(f"loading {plan.name} failed")
                await self._restore(previous)
                raise BadRequestError(f"Loading {plan.name} failed: {exc}") from exc
            finally:
                self._settled.set()

    async def _restore(self, previous: LoadPlan | None) -> None:
        if previous is None or self.engine is not None:
            return
        logger.info(f"loading {previous.name} again")
        try:
            engine = create_engine(previous.backend, previous.options)
            async for _ in engine.load():
                pass
            self.engine, self.plan, self.template = engine, previous, previous.template
        except Exception:
            logger.exception(f"could not load {previous.name} again")

    async def _drain(self, skip_queue: bool) -> None:
        engine = self.engine
        if engine is None:
            return
        if skip_queue:
            await engine.cancel_all()
        while self._users > 0 or engine.active_jobs or engine.queued_jobs:
            await asyncio.sleep(0.02)

    async def _unload_engine(self) -> None:
        engine, self.engine = self.engine, None
        self.template = None
        if engine is not None:
            await engine.cancel_all()
            await engine.unload()

    async def unload(self) -> None:
        """Unload the model; running jobs are cancelled."""
        async with self._lock:
            if self.engine is None:
                raise UnavailableError("No model is loaded.")
            self._settled.clear()
            try:
                await self._unload_engine()
                self.plan = None
            finally:
                self._settled.set()

    async def current(self) -> Engine:
        """The loaded engine, waiting for a load in progress; 503 when none is loaded."""
        await self._settled.wait()
        if self.engine is None:
            raise UnavailableError(
                "No model is loaded. An admin can load one with POST /v1/model/load."
            )
        return self.engine

    async def acquire(self) -> Lease:
        """Hold the engine for one request (release it when the answer is done).

        A load with ``skip_queue`` false waits until every lease is released.
        """
        await self.admission.enter()
        try:
            engine = await self.current()
        except BaseException:
            self.admission.leave()
            raise
        self._users += 1
        return Lease(self, engine, self.plan.name if self.plan else engine.options.name)

    def lease_ended(self) -> None:
        self._users -= 1
        self.admission.leave()

    @asynccontextmanager
    async def use(self) -> AsyncIterator[Lease]:
        lease = await self.acquire()
        try:
            yield lease
        finally:
            lease.release()


class Lease:
    """One request's hold on the loaded engine; its jobs are counted in the metrics."""

    def __init__(self, container: ModelContainer, engine: Engine, name: str) -> None:
        self._container = container
        self.engine = engine
        self.name = name
        self.template = container.template
        self._released = False

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        metrics = self._container.metrics
        finished = False
        try:
            async for chunk in self.engine.generate(request):
                if chunk.stats is not None:
                    finished = True
                    metrics.job_finished(chunk.stats)
                yield chunk
        finally:
            if not finished:
                metrics.jobs_cancelled.inc()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._container.lease_ended()
