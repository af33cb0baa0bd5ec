"""What the ExLlamaV2 and ExLlamaV3 engines do alike: tokens, the job stream, cancellation.

Both libraries have the same tokenizer calls and the same dynamic-generator results; each
engine subclass loads its model, builds its jobs and switches its LoRAs.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import gc
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from loguru import logger

from backends import grammar_threads
from backends.base import (
    DraftMode,
    DraftOptions,
    EngineInfo,
    GenerationChunk,
    GenerationRequest,
    GenerationStats,
    ImageInput,
    LoadOptions,
    LoadProgress,
    LoraEngine,
    SpecialTokens,
    put_threadsafe,
    read_outbox,
)
from backends.exllama.driver import GeneratorDriver, JobHandle
from backends.exllama.loading import (
    Progress,
    WeightsLayout,
    import_engine_library,
    with_progress,
)
from backends.exllama.results import ResultReader
from backends.exllama.sampling import dry_breaker_ids
from backends.exllama.sizing import cache_mode, job_room
from backends.exllama.vision import ImageEmbeddings, template_image_run
from common.errors import BadRequestError, UnavailableError, UnsupportedError


def bos_by_default(hf_tokenizer: Any, bos_id: int | None, tokenizer_config: dict | None) -> bool:
    """Whether the model's own tokenizer puts BOS first: its post-processor, else its config."""
    if bos_id is None:
        return False
    try:
        probe = hf_tokenizer.encode("a", add_special_tokens=True).ids
    except Exception:
        probe = []
    if probe and probe[0] == bos_id:
        return True
    return bool((tokenizer_config or {}).get("add_bos_token", False))


def unique_ids(*groups: Iterable[int | None] | int | None) -> tuple[int, ...]:
    found: list[int] = []
    for group in groups:
        items = [group] if group is None or isinstance(group, int) else list(group)
        found += [int(i) for i in items if i is not None and int(i) >= 0]
    return tuple(dict.fromkeys(found))


def special_tokens_of(tokenizer: Any, hf_tokenizer: Any, eos_ids: tuple[int, ...]) -> SpecialTokens:
    """The special tokens of an ExLlama (v2 or v3) tokenizer, whose attributes are named alike;
    ``hf_tokenizer`` is its Hugging Face ``tokenizers`` object, ``eos_ids`` the settled EOS ids."""
    bos_id = tokenizer.bos_token_id
    pad_id = tokenizer.pad_token_id
    return SpecialTokens(
        bos_id=bos_id,
        eos_ids=eos_ids,
        pad_id=pad_id if pad_id is not None and pad_id >= 0 else None,
        bos_token=tokenizer.bos_token,
        eos_token=tokenizer.eos_token,
        pad_token=tokenizer.pad_token or None,
        unk_token=tokenizer.unk_token,
        add_bos_default=bos_by_default(hf_tokenizer, bos_id, tokenizer.tokenizer_config_dict),
    )


@dataclass
class Limits:
    """Sizes settled at load: the context, the cache, and what a job reserves beyond its tokens."""

    max_seq_len: int
    cache_tokens: int
    max_batch_size: int
    chunk_size: int
    draft_tokens: int = 0


class _Sink:
    """Passes one job's results, read on the worker thread, to the event loop."""

    def __init__(self, reader: ResultReader, loop: asyncio.AbstractEventLoop) -> None:
        self.reader = reader
        self.loop = loop
        self.outbox: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()

    def _put(self, item: GenerationChunk | BaseException) -> None:
        put_threadsafe(self.loop, self.outbox, item)

    def on_result(self, result: dict[str, Any]) -> None:
        chunk = self.reader.read(result)
        if chunk is not None:
            self._put(chunk)

    def on_error(self, error: BaseException) -> None:
        self._put(error)


class ExLlamaEngine(LoraEngine):
    """The shared part of the two ExLlama engines; subclasses fill in the library calls."""

    draft_modes: ClassVar[frozenset[DraftMode]] = frozenset({"model", "ngram"})
    tokens_outlive_rewind = False
    library: str = ""
    extension: str = ""
    build_minutes: float = 0.0

    def __init__(self, options: LoadOptions) -> None:
        super().__init__(options)
        self._cache_mode = cache_mode(options.cache_mode)
        if options.draft is not None and options.draft.mode == "model":
            cache_mode(options.draft.cache_mode)
        self.tokenizer: Any = None
        self.config: Any = None
        self.model: Any = None
        self.cache: Any = None
        self.draft_config: Any = None
        self.draft_model: Any = None
        self.draft_cache: Any = None
        self.driver: GeneratorDriver | None = None
        self.limits: Limits | None = None
        self.rope_alpha = 1.0
        self.loras: list[tuple[str, float, Any]] = []
        self._pieces: list[str] = []
        self._plain_tokenizer: Any = None
        self.images: ImageEmbeddings | None = None
        self.vision_tower: Any = None  # the library's vision model, with model.vision

    # ----- pieces the subclasses provide ------------------------------------------------------

    @abc.abstractmethod
    def build_job(self, request: GenerationRequest, max_new_tokens: int) -> Any:
        """The library's job object for ``request`` (may compile a grammar: runs in a thread)."""

    @abc.abstractmethod
    def job_reserve(self, request: GenerationRequest) -> int:
        """Cache tokens a job needs beyond its prompt and output."""

    @abc.abstractmethod
    def open_vision(self) -> tuple[Callable[[Any], Any], Callable[[Any], list[int]]] | None:
        """With ``options.vision`` and a model that has one, load the library's vision tower:
        a function from a PIL image to the library's embedding object, and one from that
        object to the prompt ids it stands for (runs in a thread); else None."""

    def free(self) -> None:
        """Release the model, caches and generator (worker thread stopped already)."""
        if self.images is not None:
            self.images.clear()
        self.images = None
        if self.vision_tower is not None:
            self.vision_tower.unload()
        self.vision_tower = None
        self.drop_loras()
        for model in (self.model, self.draft_model):
            if model is not None:
                model.unload()
        self.model = self.cache = self.draft_model = self.draft_cache = None
        self.dry_breakers.cache_clear()

    @functools.lru_cache(maxsize=16)  # noqa: B019 - one engine per load, freed with it
    def dry_breakers(self, breakers: tuple[str, ...]) -> frozenset[int]:
        """The token ids DRY treats as sequence breakers, for these breaker strings."""
        return dry_breaker_ids(self._pieces, breakers)

    @abc.abstractmethod
    def read_model_files(self) -> None:
        """Config, tokenizer and sizes: everything before the weights (runs in a thread)."""

    @abc.abstractmethod
    def read_draft_config(self) -> Any:
        """The library's config of the draft model (runs in a thread)."""

    @abc.abstractmethod
    def _load_weights(
        self, config: Any, layout: WeightsLayout, progress: Progress
    ) -> tuple[Any, Any]:
        """Weights and cache for ``config``: tensor parallel, autosplit or GB per GPU."""

    @abc.abstractmethod
    def make_generator(self) -> Any:
        """The library's dynamic generator over the loaded model (runs on the worker thread)."""

    def generator_args(self) -> dict[str, Any]:
        """What both libraries' generators are built from: the model, its cache and tokenizer,
        the batch sizes, the draft model and its cache."""
        limits = self.limits
        assert limits is not None
        return {
            "model": self.model,
            "cache": self.cache,
            "tokenizer": self.tokenizer,
            "max_batch_size": limits.max_batch_size,
            "max_chunk_size": limits.chunk_size,
            "draft_model": self.draft_model,
            "draft_cache": self.draft_cache,
        }

    @abc.abstractmethod
    def loaded_summary(self) -> str:
        """One log line saying what was loaded and how it runs."""

    @abc.abstractmethod
    def open_lora(self, path: Path, scaling: float) -> Any:
        """Load one adapter for the model (on the worker thread, with no job running)."""

    @abc.abstractmethod
    def use_loras(self, generator: Any) -> None:
        """Make ``generator`` use ``self.loras`` (none: the plain model) and forget K/V cached
        under other adapters."""

    @property
    def cache_mode(self) -> str:
        return self._cache_mode

    @property
    def draft(self) -> DraftOptions | None:
        return self.options.draft

    def _load_draft(self, progress: Progress) -> None:
        draft = self.draft
        assert draft is not None
        config = self.read_draft_config()
        if config.vocab_size != self.config.vocab_size:
            raise BadRequestError(
                f"The draft model's vocabulary ({config.vocab_size}) differs from the "
                f"model's ({self.config.vocab_size}).",
                param="draft_model_name",
            )
        self.draft_config = config
        layout = WeightsLayout(draft.cache_mode, draft.gpu_split, not draft.gpu_split)
        self.draft_model, self.draft_cache = self._load_weights(config, layout, progress)

    def _load_model(self, progress: Progress) -> None:
        options = self.options
        layout = WeightsLayout(self._cache_mode, options.gpu_split, options.gpu_split_auto)
        self.model, self.cache = self._load_weights(self.config, layout, progress)

    async def load(self) -> AsyncIterator[LoadProgress]:
        async for event in import_engine_library(self.library, self.extension, self.build_minutes):
            yield event
        await asyncio.to_thread(self.read_model_files)
        if self.draft is not None and self.draft.mode == "model":
            async for event in with_progress("draft", self._load_draft):
                yield event
        async for event in with_progress("model", self._load_model):
            yield event
        await asyncio.to_thread(self._load_vision)
        self.driver = await asyncio.to_thread(GeneratorDriver, self.make_generator, self.backend)
        logger.info(self.loaded_summary())
        yield LoadProgress("model", 1, 1, "finished")

    def _load_vision(self) -> None:
        if not self.options.vision:
            return
        vision = self.open_vision()
        if vision is None:
            logger.info(f"{self.options.name} has no vision part: model.vision does nothing")
            return
        run = template_image_run(self._plain_tokenizer.token_to_id)
        if run is None:
            raise BadRequestError(
                "The model's vision part loaded, but its vocabulary has none of the image "
                "tokens Serval knows (docs/vision.md): load it with vision false.",
                param="vision",
            )
        self.images = ImageEmbeddings(*vision, run)

    async def prepare_images(
        self, prompt_ids: list[int], images: Sequence[ImageInput]
    ) -> list[int]:
        """The template's image tokens replaced by each image's embedding ids (the vision tower
        runs here, in a thread, for an image not seen before)."""
        if self.images is None:
            return await super().prepare_images(prompt_ids, images)
        return await asyncio.to_thread(self.images.expand, prompt_ids, images)

    def job_embeddings(self, request: GenerationRequest) -> list[Any] | None:
        """The embedding objects of a job's images (None without images)."""
        if not request.images or self.images is None:
            return None
        return self.images.for_job(request.images)

    @property
    def draft_name(self) -> str | None:
        draft = self.options.draft
        if draft is None:
            return None
        return "ngram" if draft.mode == "ngram" else (draft.path.name if draft.path else None)

    # ----- set by the subclass's load ---------------------------------------------------------

    def settle_tokens(
        self,
        tokenizer: Any,
        hf_tokenizer: Any,
        vocab_size: int,
        special: SpecialTokens,
        pieces: list[str],
    ) -> None:
        """Take the library's tokenizer; ``hf_tokenizer`` is the ``tokenizers`` object in it."""
        from tokenizers import Tokenizer

        self.tokenizer = tokenizer
        self._plain_tokenizer = Tokenizer.from_str(hf_tokenizer.to_str())
        self._plain_tokenizer.encode_special_tokens = True
        self._vocab_size = vocab_size
        self._special = special
        self._pieces = pieces
        self.token_piece.cache_clear()

    # ----- LoRAs ------------------------------------------------------------------------------

    def _when_idle(self, task: Any) -> asyncio.Future[Any]:
        if self.driver is None:
            raise UnavailableError("The model is not loaded.")
        return asyncio.wrap_future(self.driver.when_idle(task))

    def drop_loras(self) -> None:
        for *_, lora in self.loras:
            lora.unload()
        self.loras = []

    async def load_loras(self, loras: list[tuple[Path, str, float]]) -> dict[str, list[str]]:
        """Replace the adapters in use with ``loras`` (as the container's contract says)."""

        def attach(generator: Any) -> dict[str, list[str]]:
            self.drop_loras()
            loaded, failed = [], []
            for path, name, scaling in loras:
                try:
                    lora = self.open_lora(path, scaling)
                except Exception as exc:
                    logger.warning(f"LoRA {name} failed to load: {exc}")
                    failed.append(name)
                    continue
                self.loras.append((name, scaling, lora))
                loaded.append(name)
            self.use_loras(generator)
            return {"success": loaded, "failure": failed}

        return await self._when_idle(attach)

    async def unload_loras(self) -> None:
        def detach(generator: Any) -> None:
            self.drop_loras()
            self.use_loras(generator)

        await self._when_idle(detach)

    # ----- tokens -----------------------------------------------------------------------------

    def encode(
        self, text: str, add_bos: bool | None = None, encode_special: bool = True
    ) -> list[int]:
        if encode_special:
            encoded = self.tokenizer.encode(text, add_bos=False, encode_special_tokens=True)
            ids = [int(i) for i in encoded.reshape(-1).tolist()]
        else:  # ExLlamaV2 matches special tokens even when told not to
            ids = self._plain_tokenizer.encode(text, add_special_tokens=False).ids
        return self.with_bos(ids, add_bos)

    def decode(self, ids: list[int], decode_special: bool = True) -> str:
        if not ids:
            return ""
        import torch

        text = self.tokenizer.decode(
            torch.tensor(ids, dtype=torch.long), decode_special_tokens=decode_special
        )
        return text if isinstance(text, str) else text[0]

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one engine per load, freed with it
    def token_piece(self, token_id: int) -> str:
        return self._pieces[token_id] if 0 <= token_id < len(self._pieces) else ""

    def info(self) -> EngineInfo:
        limits = self.limits or Limits(0, 0, 0, self.options.chunk_size)
        return EngineInfo(
            backend=self.backend,
            name=self.options.name,
            path=self.options.path,
            max_seq_len=limits.max_seq_len,
            cache_size=limits.cache_tokens,
            max_batch_size=limits.max_batch_size,
            cache_mode=self.cache_mode,
            chunk_size=limits.chunk_size,
            rope_scale=self.options.rope_scale,
            rope_alpha=self.rope_alpha,
            dtype="float16",
            device="cuda",
            draft=self.draft_name,
            loras=tuple((name, scaling) for name, scaling, _ in self.loras),
            vision=self.images is not None,
        )

    # ----- generation -------------------------------------------------------------------------

    def job_counts(self) -> GeneratorDriver | None:
        return self.driver

    def room_for(self, request: GenerationRequest) -> int:
        """``max_new_tokens`` clamped to the cache; raises when the prompt does not fit."""
        limits = self.limits
        if limits is None:
            raise UnavailableError("The model is not loaded.")
        capacity = min(limits.cache_tokens, limits.max_seq_len)
        reserve = self.job_reserve(request)
        return job_room(len(request.prompt_ids), request.max_new_tokens, capacity, reserve)

    def reader_for(self, request: GenerationRequest) -> ResultReader:
        return ResultReader(
            piece=self.token_piece,
            vocab_size=self._vocab_size,
            logprobs=request.logprobs,
            tokens_outlive_rewind=self.tokens_outlive_rewind,
        )

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk]:
        driver = self.driver
        if driver is None:
            raise UnavailableError("The model is not loaded.")
        if request.prompt_logprobs:
            raise UnsupportedError(
                f"The {self.backend} engine cannot return logprobs of the prompt.",
                param="echo",
            )
        max_new = self.room_for(request)
        if max_new <= 0:
            stats = GenerationStats(prompt_tokens=len(request.prompt_ids), completion_tokens=0)
            yield GenerationChunk(finish_reason="length", stats=stats)
            return
        if request.grammar is not None:  # compiles the grammar: on a big-stack grammar thread
            job = await grammar_threads.run(
                self.build_job, request, max_new, timeout=request.grammar.build_timeout
            )
        else:
            job = self.build_job(request, max_new)
        sink = _Sink(self.reader_for(request), asyncio.get_running_loop())
        handle: JobHandle = driver.submit(job, sink)
        try:
            async for chunk in read_outbox(sink.outbox):
                yield chunk
        finally:
            driver.cancel(handle)

    async def cancel_all(self) -> None:
        if self.driver is not None:
            self.driver.cancel_all()

    # ----- unloading --------------------------------------------------------------------------

    async def unload(self) -> None:
        driver, self.driver = self.driver, None
        if driver is not None:
            await asyncio.to_thread(driver.stop)
        await asyncio.to_thread(self._free_all)

    def _free_all(self) -> None:
        self.free()
        self.loras = []
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
