"""The engine interface every backend implements, and the data that crosses it.

Endpoints talk to engines only through these types: a :class:`GenerationRequest` goes in,
:class:`GenerationChunk` objects come out of the async iterator ``generate()``. Engines never
import FastAPI; endpoints never import an engine library.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Protocol, TypeVar

from backends.sampling import SamplingParams
from common.errors import UnavailableError, UnsupportedError

T = TypeVar("T")
FinishReason = Literal["stop", "length"]
DraftMode = Literal["model", "ngram"]


@dataclass(frozen=True)
class LoadProgress:
    """One step of a model load: component ``model_type``, ``module`` of ``modules`` done."""

    model_type: str
    module: int
    modules: int
    status: Literal["processing", "finished"] = "processing"


@dataclass(frozen=True)
class DraftOptions:
    path: Path | None
    mode: DraftMode = "model"
    rope_scale: float = 1.0
    rope_alpha: float | Literal["auto"] | None = None
    cache_mode: str = "FP16"
    gpu_split: tuple[float, ...] = ()
    num_tokens: int = 4


@dataclass(frozen=True)
class LoadOptions:
    """Everything an engine needs to load a model folder."""

    path: Path
    name: str
    max_seq_len: int | None = None
    cache_size: int | None = None
    cache_mode: str = "FP16"
    max_batch_size: int | None = None
    chunk_size: int = 2048
    rope_scale: float = 1.0
    rope_alpha: float | Literal["auto"] | None = None
    gpu_split_auto: bool = True
    autosplit_reserve: tuple[float, ...] = (96,)
    gpu_split: tuple[float, ...] = ()
    tensor_parallel: bool = False
    dtype: str = "auto"
    draft: DraftOptions | None = None
    # The largest share of the batch rows that the jobs of one owner may hold (engines that
    # schedule their own batch, the transformers engine, keep the rest for other owners).
    owner_share: float = 1.0
    vision: bool = False  # load the vision part of a vision-language model


@dataclass(frozen=True)
class SpecialTokens:
    bos_id: int | None
    eos_ids: tuple[int, ...]
    pad_id: int | None
    bos_token: str | None
    eos_token: str | None
    pad_token: str | None
    unk_token: str | None
    add_bos_default: bool


@dataclass(frozen=True)
class EngineInfo:
    backend: str
    name: str
    path: Path
    max_seq_len: int
    cache_size: int
    max_batch_size: int
    cache_mode: str
    chunk_size: int
    rope_scale: float = 1.0
    rope_alpha: float | None = None
    dtype: str = ""
    device: str = "cpu"
    draft: str | None = None
    loras: tuple[tuple[str, float], ...] = ()
    vision: bool = False  # the vision part is loaded: chat messages may hold images


@dataclass(frozen=True)
class ImageInput:
    """One image of a request, already checked (``common/images.py``): the encoded file
    (PNG, JPEG, ...) within the size and pixel limits, and the SHA-256 of its bytes, which is
    what an engine keys its cached image embeddings on."""

    data: bytes
    digest: str
    width: int
    height: int


NO_IMAGES = "The loaded model does not take images (load a vision model with model.vision)."


@dataclass(frozen=True)
class GrammarSpec:
    """A constraint for the output, as an llguidance grammar (JSON text)."""

    grammar: str
    description: str
    build_timeout: float = 10.0  # seconds the engine may take to build its matcher


@dataclass
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)


@dataclass
class GenerationRequest:
    """One sequence to generate: prompt ids, resolved sampler settings and limits."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    max_new_tokens: int
    stop_strings: tuple[str, ...] = ()
    stop_token_ids: frozenset[int] = frozenset()
    logprobs: int | None = None
    prompt_logprobs: bool = False
    grammar: GrammarSpec | None = None
    # Whose job this is (an opaque name for the caller, never a key): waiting jobs of
    # different owners take turns for the batch.
    owner: str = ""
    # The images of the prompt, in the order of their placeholders in ``prompt_ids`` (which
    # the engine's ``prepare_images`` wrote).
    images: tuple[ImageInput, ...] = ()


@dataclass
class GenerationStats:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    queue_time: float = 0.0
    prefill_time: float = 0.0
    generate_time: float = 0.0

    @property
    def total_time(self) -> float:
        return self.queue_time + self.prefill_time + self.generate_time


@dataclass
class GenerationChunk:
    """Text produced since the previous chunk; the last chunk carries finish data and stats."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    stats: GenerationStats | None = None


Outbox = asyncio.Queue["GenerationChunk | BaseException"]


def put_threadsafe(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[T], item: T) -> None:
    """Hand ``item`` to ``queue`` on ``loop`` from a worker thread; once the loop has closed,
    nobody is listening and the item is dropped."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(queue.put_nowait, item)


async def read_outbox(outbox: Outbox) -> AsyncIterator[GenerationChunk]:
    """The chunks an engine's worker puts in ``outbox`` for one job, up to the last one; an
    exception put there instead is raised here, in the consumer."""
    while True:
        item = await outbox.get()
        if isinstance(item, BaseException):
            raise item
        yield item
        if item.finish_reason is not None:
            return


class JobCounts(Protocol):
    """An engine's scheduler or worker, as the job counts see it."""

    @property
    def running(self) -> int: ...

    @property
    def queued(self) -> int: ...


class Engine(abc.ABC):
    """A loaded model that encodes, decodes and generates. One instance per load.

    The constructor only checks ``options`` (raising :class:`UnsupportedError` for what the
    engine cannot do, before the current model is unloaded); ``load()`` does the work.

    What an engine can do beyond this interface is typed, never a string: ``draft_modes``
    says which speculative drafts it runs (the constructor refuses the others), and LoRA
    support is the :class:`LoraEngine` interface, whose methods an engine must implement to
    claim it.
    """

    backend: str = "abstract"
    draft_modes: ClassVar[frozenset[DraftMode]] = frozenset()

    def __init__(self, options: LoadOptions) -> None:
        draft = options.draft
        if draft is not None and draft.mode not in self.draft_modes:
            what = "an n-gram draft (draft_mode)" if draft.mode == "ngram" else "a draft model"
            raise UnsupportedError(
                f"The {self.backend} engine does not do speculative decoding with {what}: "
                "load the model without draft_model_name or draft_mode.",
                param="draft_model",
            )
        self.options = options
        self._special: SpecialTokens | None = None
        self._vocab_size = 0

    @abc.abstractmethod
    def load(self) -> AsyncIterator[LoadProgress]:
        """Load the model, yielding progress; the last event has status ``finished``."""

    @abc.abstractmethod
    async def unload(self) -> None:
        """Free the model; running jobs are cancelled. Safe to call twice."""

    @abc.abstractmethod
    def encode(
        self, text: str, add_bos: bool | None = None, encode_special: bool = True
    ) -> list[int]:
        """Token ids of ``text``; ``add_bos`` None follows the tokenizer's own default."""

    @abc.abstractmethod
    def decode(self, ids: list[int], decode_special: bool = True) -> str: ...

    @abc.abstractmethod
    def token_piece(self, token_id: int) -> str:
        """The text of one token as it appears inside a longer text."""

    @property
    def special_tokens(self) -> SpecialTokens:
        """Set by the engine's load (``_special``); 503 before it."""
        if self._special is None:
            raise UnavailableError("The model is not loaded.")
        return self._special

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def with_bos(self, ids: list[int], add_bos: bool | None) -> list[int]:
        """``ids`` with BOS first when asked (None: the tokenizer's own default), never twice."""
        special = self.special_tokens
        if add_bos is None:
            add_bos = special.add_bos_default
        if add_bos and special.bos_id is not None and (not ids or ids[0] != special.bos_id):
            return [special.bos_id, *ids]
        return ids

    @abc.abstractmethod
    def info(self) -> EngineInfo: ...

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk]:
        """Generate one sequence. Closing the iterator cancels the job in the engine."""

    def job_counts(self) -> JobCounts | None:
        """What runs this engine's jobs and counts them (None: nothing to count)."""
        return None

    @property
    def active_jobs(self) -> int:
        counts = self.job_counts()
        return counts.running if counts else 0

    @property
    def queued_jobs(self) -> int:
        counts = self.job_counts()
        return counts.queued if counts else 0

    def unsupported_params(self, params: SamplingParams) -> list[str]:
        """Sampler settings of ``params`` this engine cannot apply (reported, never hidden)."""
        return []

    async def prepare_images(
        self, prompt_ids: list[int], images: Sequence[ImageInput]
    ) -> list[int]:
        """``prompt_ids`` with the placeholder the chat template wrote for each of ``images``
        (in order) replaced by the tokens the model reads the image as; a job with these ids
        and ``images`` sees the pictures. Only an engine whose ``info().vision`` is true can."""
        raise UnsupportedError(NO_IMAGES, param="messages")

    @abc.abstractmethod
    async def cancel_all(self) -> None:
        """Cancel every running and queued job."""


class ModelView(Protocol):
    """What request planning asks of a loaded model: an :class:`Engine` has it, and so has the
    lease a route holds on one (``common.model.Lease``), which is all a route sees."""

    @property
    def backend(self) -> str: ...

    @property
    def special_tokens(self) -> SpecialTokens: ...

    @property
    def vocab_size(self) -> int: ...

    def encode(
        self, text: str, add_bos: bool | None = None, encode_special: bool = True
    ) -> list[int]: ...

    def decode(self, ids: list[int], decode_special: bool = True) -> str: ...

    def token_piece(self, token_id: int) -> str: ...

    def info(self) -> EngineInfo: ...

    def unsupported_params(self, params: SamplingParams) -> list[str]: ...


class LoraEngine(Engine):
    """An engine that applies LoRA adapters: being one is how an engine says it can."""

    @abc.abstractmethod
    async def load_loras(self, loras: list[tuple[Path, str, float]]) -> dict[str, list[str]]:
        """Use ``loras`` (folder, name, scaling) in place of the LoRAs in use:
        ``{"success": [names], "failure": [names]}``. Called only while no job runs."""

    @abc.abstractmethod
    async def unload_loras(self) -> None:
        """Stop using every LoRA: the model answers as it did without them."""
