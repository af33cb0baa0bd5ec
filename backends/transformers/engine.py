"""The transformers engine: any HF causal LM folder, on the CPU (or CUDA when present)."""

from __future__ import annotations

import abc
import asyncio
import functools
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypedDict

import torch
from loguru import logger

from backends import compute, grammar_threads
from backends.base import (
    Engine,
    EngineInfo,
    GenerationChunk,
    GenerationRequest,
    ImageInput,
    LoadOptions,
    LoadProgress,
    LoraEngine,
    SpecialTokens,
    read_outbox,
)
from backends.sampling import SamplingParams
from backends.transformers.batch import BatchScheduler, emitter
from backends.transformers.samplers import VocabIndex
from backends.transformers.vision import VisionInputs, is_vision_config, uses_mrope
from common.errors import (
    BadRequestError,
    ConflictError,
    ContextLengthError,
    UnavailableError,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

DEFAULT_MAX_BATCH_SIZE = 32
CPU_PREFILL_CHUNK = 256
LOAD_STEPS = ("config", "tokenizer", "weights", "warm-up")
CANCELLED = "The request was cancelled: an admin is changing the model or its LoRAs."


def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes in bf16 natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def _id_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


class SchedulerSettings(TypedDict):
    """The :class:`BatchScheduler` arguments every batched engine derives alike."""

    piece: Callable[[int], str]
    max_batch_size: int
    chunk_size: int
    owner_share: float
    vocab: VocabIndex


class BatchedEngine(Engine):
    """An engine whose jobs run in a :class:`BatchScheduler` (this one, and llama.cpp's):
    generation, cancelling and the job counts are the same for all of them."""

    scheduler: BatchScheduler | None
    _max_seq_len: int

    @abc.abstractmethod
    def _make_matcher(self, grammar: str) -> Any:
        """The llguidance matcher of ``grammar`` for this model's vocabulary."""

    @abc.abstractmethod
    def _token_texts(self) -> list[str]:
        """The text of every token id (for the samplers' vocabulary index)."""

    @property
    @abc.abstractmethod
    def prefill_chunk(self) -> int:
        """Prompt tokens per forward pass."""

    def _scheduler_settings(self) -> SchedulerSettings:
        """The scheduler's arguments but the engine's own (its model, how it decodes)."""
        return SchedulerSettings(
            piece=self.token_piece,
            max_batch_size=self.options.max_batch_size or DEFAULT_MAX_BATCH_SIZE,
            chunk_size=self.prefill_chunk,
            owner_share=self.options.owner_share,
            vocab=VocabIndex(self._token_texts, lambda text: self.encode(text, add_bos=False)),
        )

    def unsupported_params(self, params: SamplingParams) -> list[str]:
        """Every sampler runs here (Serval's own, on the logits) except token healing, and CFG
        in a batch of one row (its negative prompt needs a second)."""
        found = ["token_healing"] if params.token_healing else []
        if params.cfg and self.scheduler is not None and not self.scheduler.applies_cfg(params):
            found.append("cfg_scale")
        return found

    def _info(self, **fields: Any) -> EngineInfo:
        """:meth:`info`: what every batched engine says, and the engine's own ``fields``."""
        return EngineInfo(
            backend=self.backend,
            name=self.options.name,
            path=self.options.path,
            max_seq_len=self._max_seq_len,
            max_batch_size=self.scheduler.max_batch_size if self.scheduler else 0,
            **fields,
        )

    def job_counts(self) -> BatchScheduler | None:
        return self.scheduler

    def _check_idle(self) -> None:
        """Refuse a LoRA change unless the model is loaded and no job runs or waits."""
        if self.scheduler is None:
            raise UnavailableError("The model is not loaded.")
        if self.active_jobs or self.queued_jobs:
            raise ConflictError("LoRAs can only change while no request is generating.")

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk]:
        scheduler = self.scheduler
        if scheduler is None:
            raise UnavailableError("The model is not loaded.")
        longest = max(len(request.prompt_ids), len(request.params.negative_prompt_ids))
        if longest + request.max_new_tokens > self._max_seq_len:
            raise ContextLengthError(
                f"The prompt ({longest} tokens) and max_tokens "
                f"({request.max_new_tokens}) exceed the context length ({self._max_seq_len})."
            )
        if not request.prompt_ids:
            raise BadRequestError("The prompt is empty.", param="prompt")
        matcher = None
        if request.grammar is not None:  # built before the job joins, off the compute thread
            matcher = await grammar_threads.run(
                self._make_matcher, request.grammar.grammar, timeout=request.grammar.build_timeout
            )
        outbox: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()
        emit = emitter(asyncio.get_running_loop(), outbox)
        eos_ids = frozenset(self.special_tokens.eos_ids)
        sequence = scheduler.submit(request, emit, eos_ids, matcher)
        try:
            async for chunk in read_outbox(outbox):
                yield chunk
        finally:
            scheduler.cancel(sequence)

    async def cancel_all(self) -> None:
        """Cancel every job; each one's consumer gets a 503 instead of waiting for more tokens."""
        scheduler = self.scheduler
        if scheduler is None:
            return
        for sequence in [*scheduler.jobs_running, *scheduler.waiting]:
            if not sequence.finished:
                sequence.emit(UnavailableError(CANCELLED, code="cancelled"))
            scheduler.cancel(sequence)


class TransformersEngine(BatchedEngine, LoraEngine):
    backend = "transformers"

    def __init__(self, options: LoadOptions) -> None:
        super().__init__(options)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = pick_dtype(options.dtype, self.device)
        self.tokenizer: Any = None
        self.model: Any = None
        self.scheduler: BatchScheduler | None = None
        self._max_seq_len = 0
        self._ll_tokenizer: Any = None
        self._peft: Any = None
        self._loras: tuple[tuple[str, float], ...] = ()
        self._processor: Any = None
        self._vision: VisionInputs | None = None

    # ----- loading --------------------------------------------------------------------------

    async def load(self) -> AsyncIterator[LoadProgress]:
        steps = len(LOAD_STEPS)
        path = self.options.path
        yield LoadProgress("model", 0, steps)
        config = await asyncio.to_thread(self._read_config, path)
        yield LoadProgress("model", 1, steps)
        self.tokenizer = await asyncio.to_thread(self._read_tokenizer, path, config)
        yield LoadProgress("model", 2, steps)
        self.model = await compute.run(self._read_weights, path, config)
        yield LoadProgress("model", 3, steps)
        self._special = self._find_special_tokens(config)
        if self._processor is not None:
            self._vision = VisionInputs(self._processor, self.model, self.device)
        await compute.run(self._warm_up)
        self.scheduler = BatchScheduler(
            model=self.model,
            decode=lambda ids: self.tokenizer.decode(ids, skip_special_tokens=False),
            device=self.device,
            **self._scheduler_settings(),
            prompt_embeds=self._vision.prompt_embeds if self._vision else None,
        )
        logger.info(
            f"{self.options.name} loaded on {self.device.type} in {self._dtype_name}"
            f", context {self._max_seq_len}, batch {self.scheduler.max_batch_size}"
            + (", vision" if self._vision else "")
        )
        yield LoadProgress("model", steps, steps, "finished")

    def _read_config(self, path: Path) -> Any:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
        except Exception as exc:
            raise BadRequestError(f"Not a model folder: cannot read config.json ({exc})") from exc
        text_config = config.get_text_config()
        native = getattr(text_config, "max_position_embeddings", None) or 4096
        wanted = self.options.max_seq_len
        self._max_seq_len = native if wanted in (None, -1, 0) else wanted
        self._vocab_size = text_config.vocab_size
        if self.options.rope_scale != 1.0 or self.options.rope_alpha not in (None, 1.0):
            logger.warning("rope_scale and rope_alpha are not applied by the transformers engine")
        if self.options.vision and not is_vision_config(config):
            logger.info(f"{self.options.name} has no vision part: model.vision does nothing")
        if self.options.vision and is_vision_config(config) and uses_mrope(config):
            raise BadRequestError(
                "This vision model uses multimodal rotary positions (Qwen2-VL and its kin), "
                "which the transformers engine does not compute: load it with vision false.",
                param="vision",
            )
        return config

    def _read_tokenizer(self, path: Path, config: Any) -> Any:
        """The tokenizer; for a vision model loaded with ``vision``, the folder's processor
        too (its tokenizer is the one used)."""
        from transformers import AutoProcessor, AutoTokenizer

        try:
            if self.options.vision and is_vision_config(config):
                self._processor = AutoProcessor.from_pretrained(path, local_files_only=True)
                return self._processor.tokenizer
            return AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as exc:
            raise BadRequestError(f"Cannot read the tokenizer: {exc}") from exc

    def _read_weights(self, path: Path, config: Any) -> Any:
        """The model: a vision-language folder through its image-text-to-text class (the
        only one that reads its weights; without ``vision`` its text part alone is used)."""
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

        kind = AutoModelForImageTextToText if is_vision_config(config) else AutoModelForCausalLM
        try:
            model = kind.from_pretrained(
                path, config=config, dtype=self.dtype, local_files_only=True
            )
        except Exception as exc:
            raise BadRequestError(f"Cannot load the weights: {exc}") from exc
        return model.to(self.device).eval()

    def _find_special_tokens(self, config: Any) -> SpecialTokens:
        tokenizer = self.tokenizer
        eos_ids = _id_list(getattr(config.get_text_config(), "eos_token_id", None))
        generation = getattr(self.model, "generation_config", None)
        eos_ids += _id_list(getattr(generation, "eos_token_id", None))
        eos_ids += _id_list(tokenizer.eos_token_id)
        bos_id = tokenizer.bos_token_id
        probe = tokenizer.encode("a")
        return SpecialTokens(
            bos_id=bos_id,
            eos_ids=tuple(dict.fromkeys(eos_ids)),
            pad_id=tokenizer.pad_token_id,
            bos_token=tokenizer.bos_token,
            eos_token=tokenizer.eos_token,
            pad_token=tokenizer.pad_token,
            unk_token=tokenizer.unk_token,
            add_bos_default=bool(probe) and bos_id is not None and probe[0] == bos_id,
        )

    def _token_texts(self) -> list[str]:
        """The text of every token id (ids the tokenizer lacks get an empty string)."""
        known = min(len(self.tokenizer), self._vocab_size)
        texts = self.tokenizer.batch_decode([[i] for i in range(known)])
        return texts + [""] * (self._vocab_size - known)

    def _warm_up(self) -> None:
        with torch.inference_mode():
            self.model(input_ids=torch.tensor([[0, 1]], device=self.device))

    async def unload(self) -> None:
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            await asyncio.to_thread(scheduler.stop)
        if self._vision is not None:
            self._vision.clear()
        self._vision = self._processor = None
        self.model = None
        self._peft = None
        self._loras = ()
        self._ll_tokenizer = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def prefill_chunk(self) -> int:
        """Prompt tokens per forward pass: small on a CPU, so a cancelled job stops quickly and
        running streams keep flowing while a long prompt is read."""
        if self.device.type == "cpu":
            return min(self.options.chunk_size, CPU_PREFILL_CHUNK)
        return self.options.chunk_size

    @property
    def _dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    # ----- LoRAs ----------------------------------------------------------------------------

    async def load_loras(self, loras: list[tuple[Path, str, float]]) -> dict[str, list[str]]:
        """Replace the active LoRAs with ``loras`` (folder, name, scaling), applied through PEFT.

        Only while no job runs (the model container drains first), so no job ever sees the
        weights change under it. A LoRA that cannot be applied is reported in ``failure``.
        """
        self._check_idle()
        applied, failed = await compute.run(self._set_loras, loras)
        return {"success": applied, "failure": failed}

    async def unload_loras(self) -> None:
        self._check_idle()
        await compute.run(self._remove_adapters)

    def _set_loras(self, loras: list[tuple[Path, str, float]]) -> tuple[list[str], list[str]]:
        self._remove_adapters()
        kept: list[tuple[Path, str, float]] = []
        failed: list[str] = []
        for lora in loras:
            try:
                self._add_adapter(lora[0], len(kept))
                kept.append(lora)
            except Exception as exc:
                logger.error(f"LoRA {lora[1]} was not applied: {exc}")
                failed.append(lora[1])
                self._remove_adapters()  # a failed adapter may be half in place
                for index, (path, _, _) in enumerate(kept):
                    self._add_adapter(path, index)
        if kept:
            self._activate([scaling for _, _, scaling in kept])
        self._loras = tuple((name, scaling) for _, name, scaling in kept)
        return [name for _, name, _ in kept], failed

    def _add_adapter(self, path: Path, index: int) -> None:
        from peft import PeftModel

        # Adapter names are module keys inside PEFT (no dots): the user's name stays ours.
        adapter = f"serval_{index}"
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self.model, path, adapter_name=adapter)
        else:
            self._peft.load_adapter(path, adapter_name=adapter)

    def _activate(self, scalings: list[float]) -> None:
        from peft.tuners.lora import LoraLayer

        adapters = [f"serval_{index}" for index in range(len(scalings))]
        self._peft.base_model.set_adapter(adapters, inference_mode=True)
        for module in self.model.modules():
            if isinstance(module, LoraLayer):
                for adapter, scaling in zip(adapters, scalings, strict=True):
                    module.set_scale(adapter, scaling)

    def _remove_adapters(self) -> None:
        """Put the model's own layers back. PEFT never changed their weights (nothing is
        merged), so the output is exactly what it was before any LoRA."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        peft, self._peft = self._peft, None
        self._loras = ()
        if peft is not None:
            peft.unload()
        # A LoRA that failed half-way can leave adapter layers that no PeftModel knows about.
        replaced: list[str] = []
        for name, module in list(self.model.named_modules()):
            if not isinstance(module, BaseTunerLayer) or any(
                name.startswith(f"{outer}.") for outer in replaced
            ):
                continue
            parent, _, child = name.rpartition(".")
            setattr(self.model.get_submodule(parent), child, module.get_base_layer())
            replaced.append(name)
        if hasattr(self.model, "peft_config"):
            del self.model.peft_config

    # ----- tokens ---------------------------------------------------------------------------

    def encode(
        self, text: str, add_bos: bool | None = None, encode_special: bool = True
    ) -> list[int]:
        """Safe from several threads at once: the shared tokenizer is never switched."""
        if encode_special:
            ids = self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=False)
        else:
            ids = self._special_as_text.encode(text, add_special_tokens=False).ids
        return self.with_bos(ids, add_bos)

    @functools.cached_property
    def _special_as_text(self) -> Any:
        """A copy of the Rust tokenizer that reads special-token text as plain text.

        Asking the shared tokenizer for that (``split_special_tokens``) flips a flag on it, which
        fails with "Already borrowed" while another thread is encoding with it.
        """
        from tokenizers import Tokenizer

        plain = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        plain.encode_special_tokens = True
        return plain

    def decode(self, ids: list[int], decode_special: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=not decode_special)

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one engine per load, freed with it
    def token_piece(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def info(self) -> EngineInfo:
        return self._info(
            cache_size=self._max_seq_len,
            cache_mode="FP16" if self.dtype != torch.float32 else "FP32",
            chunk_size=self.prefill_chunk,
            dtype=self._dtype_name,
            device=self.device.type,
            loras=self._loras,
            vision=self._vision is not None,
        )

    async def prepare_images(
        self, prompt_ids: list[int], images: Sequence[ImageInput]
    ) -> list[int]:
        """Each image's tokens in place of its placeholder; its features are computed here
        (on the compute thread, once per image while it stays cached), before the job runs."""
        vision = self._vision
        if vision is None:
            return await super().prepare_images(prompt_ids, images)
        return await compute.run(vision.expand, prompt_ids, images)

    # ----- generation -----------------------------------------------------------------------

    def _make_matcher(self, grammar: str) -> Any:
        """The request's llguidance matcher (on a grammar thread: see grammar_threads)."""
        import llguidance.hf

        if self._ll_tokenizer is None:
            self._ll_tokenizer = llguidance.hf.from_tokenizer(
                self.tokenizer, n_vocab=self._vocab_size, eos_token=self.special_tokens.eos_ids[0]
            )
        return grammar_threads.build_matcher(self._ll_tokenizer, grammar)
