"""One GGUF model and its llama.cpp context: tokens in, logits out, several sequences at once.

Every sequence of the batch has a llama.cpp sequence id (a slot) in one unified K/V cache, so
one ``llama_decode`` call advances any mix of sequences; the logits of the positions asked for
come back as float32 rows. Every method but the tokenizer's runs on the compute thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from backends.llamacpp import native
from backends.llamacpp.lora import BaseShape
from common.errors import BadRequestError, GenerationError

PIECE_BUFFER = 256
TOKEN_ATTR_CONTROL = 1 << 3  # llama_token_attr: LLAMA_TOKEN_ATTR_CONTROL
TOKEN_ATTR_USER_DEFINED = 1 << 4


class CacheFullError(GenerationError):
    """``llama_decode`` found no room in the K/V cache (the cache is as it was before)."""


@dataclass(frozen=True)
class Entry:
    """One token of a decode call: ``token`` at ``position`` of sequence ``slot``."""

    token: int
    position: int
    slot: int
    logits: bool


def cpu_threads() -> int:
    """llama.cpp's threads (both phases): ``OMP_NUM_THREADS`` when it is set (the variable torch
    reads too), otherwise every processor this process may use.

    Measured on an idle 2-core machine (docs/benchmarks.md): two threads decode 1.7x faster than
    one. ggml's threads spin-wait for each other at every node of the graph, so where the cores
    are busy with other work fewer threads are faster: one thread decoded 3-4x faster than two
    on 2 busy cores. The test suite's two workers set ``OMP_NUM_THREADS=1`` for that reason.
    """
    configured = os.environ.get("OMP_NUM_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return len(os.sched_getaffinity(0))


class LlamaModel:
    def __init__(self, path: Path, context: int, sequences: int, batch_tokens: int) -> None:
        self.native = native.load()
        ffi, lib = self.native.ffi, self.native.lib
        self.ffi, self.lib = ffi, lib
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        self.model = lib.llama_model_load_from_file(str(path).encode(), params)
        if self.model == ffi.NULL:
            raise BadRequestError(f"llama.cpp cannot load {path.name} (see the log for why).")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))
        self.train_context = int(lib.llama_model_n_ctx_train(self.model))
        settings = lib.llama_context_default_params()
        settings.n_ctx = context
        settings.n_batch = batch_tokens
        settings.n_ubatch = batch_tokens
        settings.n_seq_max = sequences
        settings.kv_unified = True  # every sequence may use the whole cache
        settings.n_threads = settings.n_threads_batch = cpu_threads()
        settings.no_perf = True
        self.context = lib.llama_init_from_model(self.model, settings)
        if self.context == ffi.NULL:
            lib.llama_model_free(self.model)
            raise BadRequestError(f"llama.cpp cannot make a context of {context} tokens.")
        self.memory = lib.llama_get_memory(self.context)
        self.batch_tokens = batch_tokens
        self.batch = lib.llama_batch_init(batch_tokens, 0, 1)
        self.adapters: list[Any] = []  # the LoRA adapters opened and in use

    def close(self) -> None:
        lib = self.lib
        if self.context is not None:
            self.use_adapters([])
            lib.llama_batch_free(self.batch)
            lib.llama_free(self.context)
            lib.llama_model_free(self.model)
            self.context = None

    # ----- what the file says ---------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        size = 65536
        buffer = self.ffi.new("char[]", size)
        length = self.lib.llama_model_meta_val_str(self.model, key.encode(), buffer, size)
        if length < 0:
            return None
        text: bytes = self.ffi.string(buffer)
        return text.decode(errors="replace")

    @property
    def description(self) -> str:
        buffer = self.ffi.new("char[]", 256)
        self.lib.llama_model_desc(self.model, buffer, 256)
        text: bytes = self.ffi.string(buffer)
        return text.decode(errors="replace")

    def base_shape(self) -> BaseShape:
        """The model's architecture and sizes, as a LoRA conversion needs them."""
        architecture = self.meta("general.architecture") or ""
        heads = int(self.meta(f"{architecture}.attention.head_count") or 0)
        return BaseShape(
            architecture=architecture,
            blocks=int(self.meta(f"{architecture}.block_count") or 0),
            heads=heads,
            kv_heads=int(self.meta(f"{architecture}.attention.head_count_kv") or heads),
        )

    @property
    def weights_type(self) -> str:
        """The file's weight type as llama.cpp names it (``Q4_1``, ``Q8_0``, ``F16`` ...)."""
        return self.description.rsplit(" ", 1)[-1]

    # ----- tokens (safe from any thread: the vocabulary is read-only) -------------------------

    def tokenize(self, text: str, parse_special: bool) -> list[int]:
        data = text.encode()
        room = len(data) + 8  # a token is at least one byte; BOS is not added here
        ids = self.ffi.new("llama_token[]", room)
        count = self.lib.llama_tokenize(
            self.vocab, data, len(data), ids, room, False, parse_special
        )
        if count < 0:
            raise BadRequestError("The text could not be tokenized.")
        return [int(ids[i]) for i in range(count)]

    def piece_bytes(self, token: int, special: bool = True) -> bytes:
        buffer = self.ffi.new("char[]", PIECE_BUFFER)
        length = self.lib.llama_token_to_piece(self.vocab, token, buffer, PIECE_BUFFER, 0, special)
        if length < 0:
            raise GenerationError(f"Token {token} is longer than {PIECE_BUFFER} bytes.")
        return bytes(self.ffi.buffer(buffer, length))

    def detokenize(self, ids: list[int], special: bool) -> str:
        return b"".join(self.piece_bytes(i, special) for i in ids).decode(errors="replace")

    def attributes(self, token: int) -> int:
        return int(self.lib.llama_vocab_get_attr(self.vocab, token))

    def is_control(self, token: int) -> bool:
        return bool(self.attributes(token) & TOKEN_ATTR_CONTROL)

    def end_of_generation(self) -> list[int]:
        return [i for i in range(self.n_vocab) if self.lib.llama_vocab_is_eog(self.vocab, i)]

    def special_id(self, name: str) -> int | None:
        value = int(getattr(self.lib, f"llama_vocab_{name}")(self.vocab))
        return value if value >= 0 else None

    @property
    def adds_bos(self) -> bool:
        return bool(self.lib.llama_vocab_get_add_bos(self.vocab))

    def guidance_tokenizer(self, eos: int) -> Any:
        """An llguidance tokenizer over this vocabulary (about a second: build it once)."""
        import llguidance

        tokens: list[bytes] = []
        for token in range(self.n_vocab):
            text = self.piece_bytes(token)
            attributes = self.attributes(token)
            # Control tokens (and user-defined ones written like them) are special to llguidance.
            if attributes & TOKEN_ATTR_CONTROL or (
                attributes & TOKEN_ATTR_USER_DEFINED
                and text.startswith(b"<")
                and text.endswith(b">")
            ):
                text = b"\xff" + text
            tokens.append(text)
        address = int(self.ffi.cast("uintptr_t", self.vocab))
        tokenize = int(self.ffi.cast("uintptr_t", self.lib.llama_tokenize))
        return llguidance.LLTokenizer.from_llamacpp(  # type: ignore[attr-defined]
            tokens=tokens, vocab_ptr=address, tokenize_fptr=tokenize, eos_token=eos, slices=None
        )

    # ----- the forward pass (compute thread) -------------------------------------------------

    def forget(self, slot: int, start: int = 0) -> None:
        """Drop the cached positions of ``slot`` from ``start`` on (all of them by default)."""
        self.lib.llama_memory_seq_rm(self.memory, slot, start, -1)

    def share(self, source: int, target: int) -> None:
        """Give ``target`` (an empty slot) every cached position of ``source``: in the unified
        cache the cells gain a sequence id, nothing is copied or computed."""
        self.lib.llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def clear(self) -> None:
        self.lib.llama_memory_clear(self.memory, True)

    def open_adapter(self, path: Path) -> Any:
        """A GGUF LoRA file opened for this model (not yet in use: see :meth:`use_adapters`)."""
        adapter = self.lib.llama_adapter_lora_init(self.model, str(path).encode())
        if adapter == self.ffi.NULL:
            raise BadRequestError(f"llama.cpp cannot apply {path.name} (see the log for why).")
        return adapter

    def _free(self, adapters: list[Any]) -> None:
        for adapter in adapters:
            self.lib.llama_adapter_lora_free(adapter)

    def use_adapters(self, adapters: list[tuple[Any, float]]) -> None:
        """Apply ``adapters`` (opened, with their scales) in place of those in use, and free
        those. What the cache holds was computed with the old weights: the caller clears it."""
        ffi, lib = self.ffi, self.lib
        pointers = ffi.new("struct llama_adapter_lora *[]", [a for a, _ in adapters] or 1)
        scales = ffi.new("float[]", [s for _, s in adapters] or 1)
        status = lib.llama_set_adapters_lora(self.context, pointers, len(adapters), scales)
        opened = [a for a, _ in adapters]
        if status != 0:
            self._free([a for a in opened if a not in self.adapters])
            raise GenerationError(f"llama.cpp could not apply the LoRAs (status {status}).")
        self._free([a for a in self.adapters if a not in opened])
        self.adapters = opened

    def decode(self, entries: list[Entry]) -> torch.Tensor:
        """Run ``entries`` (at most ``batch_tokens``) through the model; the logits of those
        that ask for them, in their order, as ``[n, vocab]`` float32 on the CPU."""
        batch = self.batch
        asked = 0
        for index, entry in enumerate(entries):
            batch.token[index] = entry.token
            batch.pos[index] = entry.position
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = entry.slot
            batch.logits[index] = entry.logits
            asked += entry.logits
        batch.n_tokens = len(entries)
        status = self.lib.llama_decode(self.context, batch)
        if status == 1:
            raise CacheFullError("The K/V cache is full: raise cache_size, or send less at once.")
        if status != 0:
            raise GenerationError(f"llama.cpp failed to decode (status {status}).")
        rows = self.lib.llama_get_logits(self.context)
        size = asked * self.n_vocab * 4
        flat = torch.frombuffer(self.ffi.buffer(rows, size), dtype=torch.float32)
        return flat.view(asked, self.n_vocab).clone()
