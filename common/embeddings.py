"""The embedding model container: one sentence-transformers model beside the language model.

Loading and embedding run on one worker thread of their own, so the event loop never waits on
the model and requests are embedded one after another. Loads and unloads are serialised by a
lock; requests that arrive during a load wait for it and then use the new model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from loguru import logger

from backends import compute
from common.config import EmbeddingsConfig
from common.errors import BadRequestError, UnavailableError, UnsupportedError
from common.model_files import find_folders, is_embedding_folder, resolve_model_folder

if TYPE_CHECKING:
    from backends.embeddings.sentence_transformers import EmbedderInfo, SentenceTransformerEmbedder

T = TypeVar("T")


@dataclass(frozen=True)
class Embeddings:
    model: str
    vectors: np.ndarray
    prompt_tokens: int


class EmbeddingContainer:
    def __init__(self, config: EmbeddingsConfig) -> None:
        self.config = config
        self.name: str | None = None
        self._path: Path | None = None
        self._device: str | None = None
        self._embedder: SentenceTransformerEmbedder | None = None
        self._lock = asyncio.Lock()
        self._settled = asyncio.Event()
        self._settled.set()

    @property
    def model_dir(self) -> Path:
        return Path(self.config.embedding_model_dir)

    @property
    def loading(self) -> bool:
        return not self._settled.is_set()

    @property
    def info(self) -> EmbedderInfo | None:
        return self._embedder.info if self._embedder is not None else None

    def list_models(self) -> list[str]:
        """Every sentence-transformers model folder in ``embedding_model_dir``."""
        return [name for name, _ in find_folders(self.model_dir, is_embedding_folder, linked=True)]

    async def _run(self, work: Callable[..., T], *args: object) -> T:
        """On the process's compute thread, with the text models (see backends/compute.py)."""
        return await compute.run(work, *args)

    async def load(self, name: str, device: str | None = None) -> None:
        """Load ``name`` (a folder in ``embedding_model_dir``) in place of the current model.

        If it cannot be loaded, the current model stays.
        """
        path = resolve_model_folder(self.model_dir, name, what="embedding_model_name")
        if not is_embedding_folder(path):
            raise BadRequestError(
                f"{name} is not a sentence-transformers model (it has no modules.json).",
                param="embedding_model_name",
            )
        device = device or self.config.embeddings_device
        async with self._lock:
            if self._embedder is not None and (self._path, self._device) == (path, device):
                return
            self._settled.clear()
            try:
                from backends.embeddings.sentence_transformers import SentenceTransformerEmbedder

                embedder = await self._run(SentenceTransformerEmbedder, path, device)
                self._embedder, self._path, self._device = embedder, path, device
                self.name = name
            finally:
                self._settled.set()
        info = embedder.info
        logger.info(
            f"embedding model {name} loaded on {info.device}: {info.dimensions} dimensions"
            f", up to {info.max_seq_len} tokens"
        )

    async def unload(self) -> None:
        async with self._lock:
            if self._embedder is None:
                raise UnavailableError("No embedding model is loaded.")
            self._embedder = self._path = self._device = self.name = None

    async def current(self) -> tuple[str, SentenceTransformerEmbedder]:
        """The loaded model, waiting for a load in progress; 503 when none is loaded."""
        await self._settled.wait()
        if self._embedder is None or self.name is None:
            raise UnavailableError(
                "No embedding model is loaded. An admin can load one with "
                "POST /v1/model/embedding/load."
            )
        return self.name, self._embedder

    async def embed(self, texts: list[str], dimensions: int | None = None) -> Embeddings:
        """One vector per text; ``dimensions`` shortens them where the model was trained for it."""
        name, embedder = await self.current()
        full = embedder.info.dimensions
        if dimensions is not None and dimensions != full:
            if dimensions > full:
                raise BadRequestError(
                    f"dimensions may be at most {full} for {name}.", param="dimensions"
                )
            if not embedder.info.matryoshka:
                raise UnsupportedError(
                    f"{name} makes {full}-dimensional embeddings and was not trained to be "
                    "shortened (no Matryoshka tag in its model card): leave dimensions out.",
                    param="dimensions",
                )

        def work() -> tuple[np.ndarray, list[int]]:
            return embedder.embed(texts, dimensions), embedder.count_tokens(texts)

        vectors, counts = await self._run(work)
        return Embeddings(model=name, vectors=vectors, prompt_tokens=sum(counts))

    def close(self) -> None:
        self._embedder = None
