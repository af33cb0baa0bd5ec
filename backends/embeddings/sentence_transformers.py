"""Sentence embeddings with sentence-transformers, loaded offline from a local folder.

Everything here blocks: the embedding container calls it on its own worker thread.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from common.errors import BadRequestError

MATRYOSHKA = re.compile(r"matryoshka", re.IGNORECASE)


@dataclass(frozen=True)
class EmbedderInfo:
    dimensions: int
    max_seq_len: int
    device: str
    matryoshka: bool


def _card_tags(path: Path) -> list[str]:
    """The ``tags`` in the front matter of the folder's model card (README.md), if any."""
    try:
        text = (path / "README.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    if not text.startswith("---"):
        return []
    front, _, _ = text[3:].partition("\n---")
    try:
        meta = yaml.safe_load(front)
    except yaml.YAMLError:
        return []
    tags = meta.get("tags") if isinstance(meta, dict) else None
    return [str(tag) for tag in tags] if isinstance(tags, list) else []


def trained_for_truncation(path: Path) -> bool:
    """True for Matryoshka models (trained so that a prefix of the vector is an embedding), as
    their model card says with a tag such as ``loss:MatryoshkaLoss``."""
    return any(MATRYOSHKA.search(tag) for tag in _card_tags(path))


class SentenceTransformerEmbedder:
    """One loaded sentence-transformers model."""

    def __init__(self, path: Path, device: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        try:
            self.model: Any = SentenceTransformer(
                str(path), device=None if device == "auto" else device, local_files_only=True
            )
        except Exception as exc:
            raise BadRequestError(f"Cannot load the embedding model {path.name}: {exc}") from exc
        self.info = EmbedderInfo(
            dimensions=int(self.model.get_embedding_dimension()),
            max_seq_len=int(self.model.max_seq_length),
            device=str(self.model.device),
            matryoshka=trained_for_truncation(path),
        )

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text is embedded from (after truncation to the model's length)."""
        features = self.model.tokenize(texts)
        return [int(n) for n in features["attention_mask"].sum(dim=1)]

    def embed(self, texts: list[str], dimensions: int | None = None) -> np.ndarray:
        """One float32 row per text; ``dimensions`` keeps that many leading values and makes
        each row unit length again (only for Matryoshka models, as the caller checks)."""
        vectors = self.model.encode(
            texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32)
        if dimensions is not None and dimensions < vectors.shape[1]:
            vectors = vectors[:, :dimensions]
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, np.finfo(np.float32).tiny)
        return vectors
