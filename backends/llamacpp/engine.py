"""The llama.cpp engine: a GGUF file served as it is, on the CPU, with continuous batching.

llama.cpp runs the forward passes (its quantised kernels read a 4-bit model's weights as 4-bit,
a quarter of the memory traffic of fp32, which is what bounds decoding on a CPU); Serval's own
scheduler and samplers do the rest on the logits, so sampling, grammars, stop strings,
logprobs and abort behave as on the transformers engine. PEFT LoRA folders are converted once
into llama.cpp's GGUF adapters (backends/llamacpp/lora.py). Token healing is not done: it is
named where asked.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from loguru import logger

from backends import compute, grammar_threads
from backends.base import (
    EngineInfo,
    LoadOptions,
    LoadProgress,
    LoraEngine,
    SpecialTokens,
)
from backends.llamacpp.batch import LlamaCppScheduler
from backends.llamacpp.lora import gguf_adapter
from backends.llamacpp.model import LlamaModel, cpu_threads
from backends.transformers.engine import DEFAULT_MAX_BATCH_SIZE, BatchedEngine
from common.errors import BadRequestError, UnavailableError

PREFILL_CHUNK = 256
# The unified K/V cache holds this many tokens across all sequences unless cache_size says
# otherwise (at least one full context): 16k tokens of a 135M model are about 370 MB in F16.
DEFAULT_CACHE_TOKENS = 16384
LOAD_STEPS = ("library", "weights", "vocabulary")


def gguf_file(folder: Path) -> Path:
    """The GGUF file of ``folder`` (common/model_files.py refuses a folder with several)."""
    found = next(iter(sorted(folder.glob("*.gguf"))), None)
    if found is None:
        raise BadRequestError(f"{folder.name} holds no .gguf file.")
    return found


class LlamaCppEngine(BatchedEngine, LoraEngine):
    backend = "llamacpp"

    def __init__(self, options: LoadOptions) -> None:
        super().__init__(options)
        self.file = gguf_file(options.path)
        self.llama: LlamaModel | None = None
        self.scheduler: LlamaCppScheduler | None = None
        self._max_seq_len = 0
        self._cache_size = 0
        self._ll_tokenizer: Any = None
        self._loras: tuple[tuple[str, float], ...] = ()

    # ----- loading --------------------------------------------------------------------------

    async def load(self) -> AsyncIterator[LoadProgress]:
        steps = len(LOAD_STEPS)
        yield LoadProgress("model", 0, steps)
        from backends.llamacpp import native

        library = await compute.run(native.load)
        yield LoadProgress("model", 1, steps)
        self.llama = await compute.run(self._open)
        yield LoadProgress("model", 2, steps)
        llama = self.llama
        self._special = await asyncio.to_thread(self._find_special_tokens, llama)
        self.scheduler = LlamaCppScheduler(
            llama,
            cache_tokens=self._cache_size,
            decode=lambda ids: llama.detokenize(ids, special=True),
            **self._scheduler_settings(),
        )
        logger.info(
            f"{self.options.name} loaded on llama.cpp {library.version} ({self.file.name}, "
            f"{llama.weights_type} weights), context {self._max_seq_len}, cache "
            f"{self._cache_size} tokens, batch {self.scheduler.max_batch_size}, "
            f"{cpu_threads()} threads (OMP_NUM_THREADS); CPU features used: {library.cpu_features}"
        )
        yield LoadProgress("model", steps, steps, "finished")

    @property
    def prefill_chunk(self) -> int:
        return min(self.options.chunk_size, PREFILL_CHUNK)

    def _open(self) -> LlamaModel:
        options = self.options
        batch = options.max_batch_size or DEFAULT_MAX_BATCH_SIZE
        probe = LlamaModel(self.file, context=256, sequences=1, batch_tokens=8)
        native_context, vocab = probe.train_context, probe.n_vocab
        probe.close()
        wanted = options.max_seq_len
        self._max_seq_len = native_context if wanted in (None, -1, 0) else int(wanted)
        self._cache_size = options.cache_size or max(
            self._max_seq_len, min(self._max_seq_len * batch, DEFAULT_CACHE_TOKENS)
        )
        self._vocab_size = vocab
        if options.rope_scale != 1.0 or options.rope_alpha not in (None, 1.0):
            logger.warning("rope_scale and rope_alpha are not applied by the llama.cpp engine")
        return LlamaModel(
            self.file,
            context=self._cache_size,
            sequences=batch,
            batch_tokens=max(2 * self.prefill_chunk, batch),
        )

    def _find_special_tokens(self, llama: LlamaModel) -> SpecialTokens:
        bos = llama.special_id("bos")
        eos = llama.special_id("eos")
        pad = llama.special_id("pad")
        ends = [i for i in (eos, llama.special_id("eot")) if i is not None]
        eos_ids = tuple(dict.fromkeys([*ends, *llama.end_of_generation()]))

        def text(token: int | None) -> str | None:
            return None if token is None else self.token_piece(token)

        return SpecialTokens(
            bos_id=bos,
            eos_ids=eos_ids,
            pad_id=pad,
            bos_token=text(bos),
            eos_token=text(eos),
            pad_token=text(pad),
            unk_token=None,
            add_bos_default=llama.adds_bos and bos is not None,
        )

    def _token_texts(self) -> list[str]:
        return [self.token_piece(i) for i in range(self._vocab_size)]

    async def unload(self) -> None:
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            await asyncio.to_thread(scheduler.stop)
        llama, self.llama = self.llama, None
        if llama is not None:
            await compute.run(llama.close)
        self._ll_tokenizer = None
        self._loras = ()

    # ----- LoRAs ----------------------------------------------------------------------------

    async def load_loras(self, loras: list[tuple[Path, str, float]]) -> dict[str, list[str]]:
        """Replace the LoRAs in use with ``loras`` (folder, name, scaling); each PEFT folder is
        converted to a GGUF adapter on first use. One that cannot be applied is a ``failure``."""
        self._check_idle()
        applied, failed = await compute.run(self._set_loras, loras)
        return {"success": applied, "failure": failed}

    async def unload_loras(self) -> None:
        self._check_idle()
        await compute.run(self._set_loras, [])

    def _set_loras(self, loras: list[tuple[Path, str, float]]) -> tuple[list[str], list[str]]:
        llama = self._model()
        shape = llama.base_shape()
        opened: list[tuple[Any, float]] = []
        kept: list[tuple[str, float]] = []
        failed: list[str] = []
        for path, name, scaling in loras:
            try:
                opened.append((llama.open_adapter(gguf_adapter(path, shape)), scaling))
            except Exception as exc:
                logger.error(f"LoRA {name} was not applied: {exc}")
                failed.append(name)
                continue
            kept.append((name, scaling))
        llama.use_adapters(opened)
        assert self.scheduler is not None  # loaded: _check_idle said so
        self.scheduler.clear_cache()  # what it holds was computed with the old weights
        self._loras = tuple(kept)
        return [name for name, _ in kept], failed

    # ----- tokens ---------------------------------------------------------------------------

    def _model(self) -> LlamaModel:
        if self.llama is None:
            raise UnavailableError("The model is not loaded.")
        return self.llama

    def encode(
        self, text: str, add_bos: bool | None = None, encode_special: bool = True
    ) -> list[int]:
        return self.with_bos(self._model().tokenize(text, parse_special=encode_special), add_bos)

    def decode(self, ids: list[int], decode_special: bool = True) -> str:
        llama = self._model()
        if not decode_special:
            ids = [i for i in ids if not llama.is_control(i)]
        return llama.detokenize(ids, special=decode_special)

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one engine per load, freed with it
    def token_piece(self, token_id: int) -> str:
        return self._model().piece_bytes(token_id).decode(errors="replace")

    def info(self) -> EngineInfo:
        return self._info(
            cache_size=self._cache_size,
            cache_mode="FP16",
            chunk_size=self.prefill_chunk,
            dtype=self.llama.weights_type if self.llama else "",
            device="cpu",
            loras=self._loras,
        )

    # ----- generation -----------------------------------------------------------------------

    def _make_matcher(self, grammar: str) -> Any:
        """The request's llguidance matcher (on a grammar thread: see grammar_threads)."""
        if self._ll_tokenizer is None:
            eos = self.special_tokens.eos_ids[0]
            self._ll_tokenizer = self._model().guidance_tokenizer(eos)
        return grammar_threads.build_matcher(self._ll_tokenizer, grammar)
