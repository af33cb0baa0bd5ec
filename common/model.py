"""The model container: the one loaded model, its template and LoRAs, and the lock around them.

Loads, unloads and LoRA changes are serialised by one lock. Each request holds a :class:`Lease`
while it generates. A change waits until every lease is released (or, with ``skip_queue``,
cancels the running jobs), and requests that arrive meanwhile wait for it to end and then run
on whatever is loaded, or get 503 when nothing is. So no request ever sees the weights change
under it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml
from loguru import logger
from pydantic import BaseModel, ValidationError

from backends.base import (
    DraftOptions,
    Engine,
    EngineInfo,
    GenerationChunk,
    GenerationRequest,
    ImageInput,
    LoadOptions,
    LoadProgress,
    LoraEngine,
    SpecialTokens,
)
from backends.registry import choose_backend, create_engine, gguf_is_fastest_here
from backends.sampling import SamplingParams
from common.admission import Admission
from common.chat.templates import ChatTemplate, find_model_template
from common.config import (
    DEFAULT_GGUF_MODEL_NAME,
    DEFAULT_MODEL_NAME,
    DraftModelConfig,
    ModelConfig,
    ServalConfig,
)
from common.errors import BadRequestError, ServalError, UnavailableError, UnsupportedError
from common.loras import LoraChoice, resolve_loras
from common.metrics import Metrics
from common.model_files import check_model_folder, resolve_model_folder

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
    "vision",
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


S = TypeVar("S", bound=BaseModel)


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


def _validated(section: type[S], merged: dict[str, Any], name: str) -> S:
    """``merged`` checked once against the config model ``section``, whose defaults fill the
    keys no source set (they are the one place load defaults are written)."""
    try:
        return section.model_validate(merged)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise BadRequestError(
            f"Invalid load setting for {name}: {where}: {problem['msg']}", param=where or None
        ) from None


@dataclass
class LoadPlan:
    """Settings for one load, after merging config, request and the folder's own defaults,
    validated as the config's ``model:`` and ``draft_model:`` sections (only the load keys,
    :data:`LOAD_KEYS` and :data:`DRAFT_KEYS`, are taken from them).

    ``loras`` are applied after the model loads (start-up: ``lora.loras``) and then track the
    LoRAs in use; they do not count when comparing plans.
    """

    name: str
    path: Path
    settings: ModelConfig = field(default_factory=ModelConfig)
    draft: DraftModelConfig = field(default_factory=DraftModelConfig)
    loras: tuple[LoraChoice, ...] = field(default=(), compare=False)


class ModelContainer:
    def __init__(self, config: ServalConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        network = config.network
        self.admission = Admission(
            network.max_concurrent_requests or 1, network.max_queued_requests, network.key_share
        )
        self.metrics.waiting_requests.set_function(lambda: self.admission.waiting)
        self.metrics.watch_engine(lambda: self.active_jobs, lambda: self.queued_jobs)
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
    def lora_dir(self) -> Path:
        return Path(self.config.lora.lora_dir)

    @property
    def loading(self) -> bool:
        return not self._settled.is_set()

    @property
    def name(self) -> str | None:
        return self.plan.name if self.engine is not None and self.plan else None

    @property
    def loaded(self) -> bool:
        return self.engine is not None

    def loaded_info(self) -> EngineInfo | None:
        """What the loaded engine reports about itself; None when no model is loaded."""
        return self.engine.info() if self.engine is not None else None

    @property
    def active_jobs(self) -> int:
        return self.engine.active_jobs if self.engine is not None else 0

    @property
    def queued_jobs(self) -> int:
        return self.engine.queued_jobs if self.engine is not None else 0

    def startup_model_name(self) -> str | None:
        """``model.model_name``, except that the default model with ``backend: auto`` is served
        from its GGUF file where that is fastest (:func:`gguf_is_fastest_here`)."""
        model = self.config.model
        if (
            model.model_name == DEFAULT_MODEL_NAME
            and model.backend == "auto"
            and (self.model_dir / DEFAULT_GGUF_MODEL_NAME).is_dir()
            and gguf_is_fastest_here()
        ):
            return DEFAULT_GGUF_MODEL_NAME
        return model.model_name

    def plan_load(
        self, name: str, request: dict[str, Any] | None = None, draft: dict[str, Any] | None = None
    ) -> LoadPlan:
        """Merge settings for loading ``name``: config < request < the folder's tabby_config.yml.

        With ``request`` None (start-up) every model key of the config applies; for API loads
        only the keys listed in ``model.use_as_default`` do.
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
        settings.update({k: v for k, v in folder_model.items() if k in LOAD_KEYS and v is not None})
        draft_settings = {
            key: getattr(self.config.draft_model, key)
            for key in DRAFT_KEYS
            if request is None or key in model_config.use_as_default
        }
        draft_settings.update({k: v for k, v in (draft or {}).items() if v is not None})
        draft_settings.update(
            {k: v for k, v in folder_draft.items() if k in DRAFT_KEYS and v is not None}
        )
        loras = self._startup_loras() if request is None else ()
        return LoadPlan(
            name=name,
            path=path,
            settings=_validated(ModelConfig, settings, name),
            draft=_validated(DraftModelConfig, draft_settings, name),
            loras=loras,
        )

    def _startup_loras(self) -> tuple[LoraChoice, ...]:
        """``lora.loras`` that exist; the others are reported and left out."""
        found: list[LoraChoice] = []
        for entry in self.config.lora.loras:
            try:
                choices, missing = resolve_loras(self.lora_dir, [(entry.name, entry.scaling)])
            except ServalError as exc:
                logger.error(f"LoRA {entry.name!r} in lora.loras is skipped: {exc.message}")
                continue
            for name in missing:
                logger.error(f"LoRA {name!r} in lora.loras: no such LoRA in {self.lora_dir}/")
            found += choices
        return tuple(found)

    def _draft_options(self, plan: LoadPlan) -> DraftOptions | None:
        draft = plan.draft
        if draft.draft_mode == "ngram":
            return DraftOptions(path=None, mode="ngram", num_tokens=draft.draft_num_tokens)
        name = draft.draft_model_name
        if draft.draft_mode == "disabled" or not name:
            return None
        base = Path(self.config.draft_model.draft_model_dir)
        return DraftOptions(
            path=resolve_model_folder(base, name, what="draft_model_name"),
            rope_scale=draft.draft_rope_scale,
            rope_alpha=draft.draft_rope_alpha,
            cache_mode=draft.draft_cache_mode,
            gpu_split=tuple(draft.draft_gpu_split),
            num_tokens=draft.draft_num_tokens,
        )

    def _options(self, plan: LoadPlan) -> LoadOptions:
        """The plan's load settings that the engine takes (the same names in both), its folder,
        its draft model, and the share of the batch one key may hold."""
        s = plan.settings
        settings = s.model_dump(include={f.name for f in fields(LoadOptions)} & set(LOAD_KEYS))
        settings.update(autosplit_reserve=tuple(s.autosplit_reserve), gpu_split=tuple(s.gpu_split))
        return LoadOptions(
            path=plan.path,
            name=plan.name,
            draft=self._draft_options(plan),
            owner_share=self.config.network.key_share,
            **settings,
        )

    async def load(self, plan: LoadPlan, skip_queue: bool = False) -> AsyncIterator[LoadProgress]:
        """Load ``plan``'s model, replacing the current one; yields progress events.

        A folder that cannot be a model, or settings the engine cannot do, are refused before
        the current model is touched. If the new model fails to load, the previous one is
        loaded again.
        """
        async with self._lock:
            async for progress in self._load_locked(plan, skip_queue):
                yield progress

    def prepare(self, plan: LoadPlan) -> tuple[Engine, ChatTemplate | None]:
        """The engine (not loaded yet) and template for ``plan``; raises for a folder that
        cannot be a model or settings the engine cannot do (a draft model on the CPU engine),
        so a load is refused before anything is unloaded."""
        check_model_folder(plan.path)
        backend = choose_backend(plan.settings.backend, plan.path)
        template = find_model_template(plan.path, plan.settings.prompt_template)
        return create_engine(backend, self._options(plan)), template

    async def _load_locked(self, plan: LoadPlan, skip_queue: bool) -> AsyncIterator[LoadProgress]:
        if self.engine is not None and self.plan == plan:
            yield LoadProgress("model", 1, 1, "finished")
            return
        engine, template = self.prepare(plan)
        previous = self.plan
        async with self._quiet(skip_queue):
            try:
                await self._unload_engine()
                started = time.perf_counter()
                try:
                    async for progress in engine.load():
                        yield progress
                    plan = replace(plan, loras=await self._apply_loras(engine, plan.loras))
                except BaseException:
                    await engine.unload()
                    raise
                self.engine, self.template, self.plan = engine, template, plan
                self._size_admission(engine)
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

    async def _apply_loras(
        self, engine: Engine, loras: tuple[LoraChoice, ...]
    ) -> tuple[LoraChoice, ...]:
        """Apply ``loras`` to a freshly loaded ``engine`` (failures are logged); those applied."""
        if not loras:
            return ()
        if not isinstance(engine, LoraEngine):
            logger.error(f"the {engine.backend} engine cannot load LoRAs; none applied")
            return ()
        result = await engine.load_loras(list(loras))
        if result["failure"]:
            logger.error(f"LoRAs not applied: {', '.join(result['failure'])}")
        return tuple(lora for lora in loras if lora.name in result["success"])

    async def _restore(self, previous: LoadPlan | None) -> None:
        if previous is None or self.engine is not None:
            return
        logger.info(f"loading {previous.name} again")
        try:
            engine = create_engine(
                choose_backend(previous.settings.backend, previous.path),
                self._options(previous),
            )
            async for _ in engine.load():
                pass
            previous = replace(previous, loras=await self._apply_loras(engine, previous.loras))
            self.engine, self.plan = engine, previous
            self._size_admission(engine)
            self.template = find_model_template(previous.path, previous.settings.prompt_template)
        except Exception:
            logger.exception(f"could not load {previous.name} again")

    def _size_admission(self, engine: Engine) -> None:
        """As many generation slots as configured, or as the engine batches together."""
        configured = self.config.network.max_concurrent_requests
        self.admission.resize(configured or engine.info().max_batch_size or 1)

    @asynccontextmanager
    async def _quiet(self, skip_queue: bool) -> AsyncIterator[None]:
        """While the body runs, no request generates: new ones wait, and running ones are
        waited for (or, with ``skip_queue``, cancelled) before it starts."""
        self._settled.clear()
        try:
            await self._drain(skip_queue)
            yield
        finally:
            self._settled.set()

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

    def _lora_engine(self) -> LoraEngine:
        if self.engine is None:
            raise UnavailableError("No model is loaded.")
        if not isinstance(self.engine, LoraEngine):
            raise UnsupportedError(f"The {self.engine.backend} engine cannot load LoRAs.")
        return self.engine

    async def load_loras(
        self, loras: list[LoraChoice], skip_queue: bool = False
    ) -> dict[str, list[str]]:
        """Replace the LoRAs in use with ``loras``: ``{"success": [...], "failure": [...]}``."""
        async with self._lock:
            engine = self._lora_engine()
            async with self._quiet(skip_queue):
                result = await engine.load_loras(list(loras))
            assert self.plan is not None
            applied = tuple(lora for lora in loras if lora.name in result["success"])
            self.plan = replace(self.plan, loras=applied)
            return result

    async def unload_loras(self, skip_queue: bool = False) -> None:
        """Stop using every LoRA; the model answers exactly as it did without them."""
        async with self._lock:
            engine = self._lora_engine()
            async with self._quiet(skip_queue):
                await engine.unload_loras()
            assert self.plan is not None
            self.plan = replace(self.plan, loras=())

    async def current(self) -> Engine:
        """The loaded engine, waiting for a load in progress; 503 when none is loaded."""
        await self._settled.wait()
        if self.engine is None:
            raise UnavailableError(
                "No model is loaded. An admin can load one with POST /v1/model/load."
            )
        return self.engine

    async def acquire(self, owner: str = "") -> Lease:
        """Hold the engine and a generation slot for one request of ``owner`` (an API key's
        fair-share identity); release it when the answer is done.

        A load with ``skip_queue`` false waits until every lease is released.
        """
        await self.admission.enter(owner)
        try:
            await self.current()
            return self._lease(owner)
        except BaseException:
            self.admission.leave(owner)
            raise

    async def acquire_model(self, plan: LoadPlan, owner: str = "") -> Lease:
        """A lease on ``plan``'s model, loading it first when another model is loaded (after
        the running requests finish). The lease is taken under the load lock, so no other
        load can come between this load and this request."""
        await self.admission.enter(owner)
        try:
            if not self.loading and self._serves(plan.path):
                return self._lease(owner)
            async with self._lock:
                if not self._serves(plan.path):
                    logger.info(f"loading {plan.name} for a request that names it")
                    async for _ in self._load_locked(plan, skip_queue=False):
                        pass
                return self._lease(owner)
        except BaseException:
            self.admission.leave(owner)
            raise

    def _serves(self, path: Path) -> bool:
        return self.engine is not None and self.plan is not None and self.plan.path == path

    def _lease(self, slot: str | None) -> Lease:
        engine, plan = self.engine, self.plan
        if engine is None or plan is None:
            raise UnavailableError(
                "No model is loaded. An admin can load one with POST /v1/model/load."
            )
        self._users += 1
        return Lease(self, engine, plan.name, plan.path, slot)

    def lease_ended(self, slot: str | None) -> None:
        self._users -= 1
        if slot is not None:
            self.admission.leave(slot)

    @asynccontextmanager
    async def use(self) -> AsyncIterator[Lease]:
        """Hold the engine for quick work that generates nothing (tokenizing, reading what is
        loaded): no generation slot is taken, so it never waits behind generations."""
        await self.current()
        lease = self._lease(None)
        try:
            yield lease
        finally:
            lease.release()


class Lease:
    """One request's hold on the loaded engine (and, with ``slot`` naming its owner, on a
    generation slot); its jobs are counted in the metrics.

    It is all a route sees of the model: tokenizing, the special tokens, the context length,
    the backend's name and the sampler settings it cannot apply are asked of the lease, which
    passes them on to the engine it holds (endpoints never name the engine).

    ``completion_tokens`` counts what its jobs produced: a finished job's own count, and for a
    job that was cancelled, aborted or left by its client, the tokens handed on before it ended.
    """

    def __init__(
        self, container: ModelContainer, engine: Engine, name: str, path: Path, slot: str | None
    ) -> None:
        self._container = container
        self._engine = engine
        self.name = name
        self.path = path
        self.template = container.template
        self.completion_tokens = 0
        self._slot = slot
        self._released = False

    @property
    def backend(self) -> str:
        return self._engine.backend

    @property
    def special_tokens(self) -> SpecialTokens:
        return self._engine.special_tokens

    @property
    def vocab_size(self) -> int:
        return self._engine.vocab_size

    @property
    def context_length(self) -> int:
        """The most tokens one sequence (prompt and answer) may have."""
        return self._engine.info().max_seq_len

    def info(self) -> EngineInfo:
        return self._engine.info()

    def encode(
        self, text: str, add_bos: bool | None = None, encode_special: bool = True
    ) -> list[int]:
        """Blocking: request text goes through :func:`common.tokenizing.encode_text`."""
        return self._engine.encode(text, add_bos, encode_special)

    def decode(self, ids: list[int], decode_special: bool = True) -> str:
        return self._engine.decode(ids, decode_special)

    def token_piece(self, token_id: int) -> str:
        return self._engine.token_piece(token_id)

    def unsupported_params(self, params: SamplingParams) -> list[str]:
        return self._engine.unsupported_params(params)

    async def prepare_images(
        self, prompt_ids: list[int], images: Sequence[ImageInput]
    ) -> list[int]:
        return await self._engine.prepare_images(prompt_ids, images)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk]:
        metrics = self._container.metrics
        finished = False
        handed_on = 0  # tokens of this job passed to the consumer so far
        if self._slot is not None:
            request = replace(request, owner=self._slot)
        try:
            async for chunk in self._engine.generate(request):
                if chunk.stats is not None:
                    finished = True
                    metrics.job_finished(
                        chunk.stats, chunk.finish_reason, chunk.stop_reason, request.params.seed
                    )
                    self.completion_tokens += chunk.stats.completion_tokens - handed_on
                else:
                    handed_on += len(chunk.token_ids)
                    self.completion_tokens += len(chunk.token_ids)
                yield chunk
        finally:
            if not finished:
                metrics.jobs_cancelled.inc()
                metrics.generated_tokens.inc(handed_on)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._container.lease_ended(self._slot)
