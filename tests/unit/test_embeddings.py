"""The embedding container on the real all-MiniLM-L6-v2: shortening Matryoshka vectors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from common.config import EmbeddingsConfig
from common.embeddings import EmbeddingContainer
from tests.support.files import link_tree
from tests.support.server import ROOT

SOURCE = ROOT / "models" / "all-MiniLM-L6-v2"
TEXTS = ["A cat is sleeping on the sofa.", "Interest rates rose.", "x"]


def _with_card_tags(target: Path, tags: list[str]) -> Path:
    """A copy of the model whose model card carries ``tags`` (the weights are hard links)."""
    link_tree(SOURCE, target)
    card = target / "README.md"
    card.unlink()  # a hard link: write a new file, not through to the original
    card.write_text("---\ntags:\n" + "".join(f"- {tag}\n" for tag in tags) + "---\n# Card\n")
    return target


def test_dimensions_shortens_and_renormalises_matryoshka_vectors(tmp_path: Path) -> None:
    if not (SOURCE / "modules.json").is_file():
        pytest.fail("the default embedding model is missing: run ./test.sh (it fetches it)")
    _with_card_tags(tmp_path / "nested-minilm", ["sentence-transformers", "loss:MatryoshkaLoss"])
    container = EmbeddingContainer(EmbeddingsConfig(embedding_model_dir=str(tmp_path)))

    async def scenario() -> None:
        assert container.list_models() == ["nested-minilm"]
        await container.load("nested-minilm")
        assert container.info is not None and container.info.matryoshka
        full = await container.embed(TEXTS)
        short = await container.embed(TEXTS, dimensions=64)
        assert full.vectors.shape == (3, 384) and short.vectors.shape == (3, 64)
        assert short.vectors.dtype == np.float32
        prefix = full.vectors[:, :64]
        expected = prefix / np.linalg.norm(prefix, axis=1, keepdims=True)
        assert np.allclose(short.vectors, expected, atol=1e-6)
        assert np.allclose(np.linalg.norm(short.vectors, axis=1), 1.0, atol=1e-5)
        assert short.prompt_tokens == full.prompt_tokens > len(TEXTS)

    try:
        asyncio.run(scenario())
    finally:
        container.close()


@pytest.mark.parametrize(
    ("card", "matryoshka"),
    [
        ("---\ntags:\n- sentence-transformers\n- loss:MatryoshkaLoss\n---\n", True),
        ("---\ntags: [matryoshka]\n---\n", True),
        ("---\ntags:\n- sentence-transformers\n---\nMatryoshka in the text only\n", False),
        ("no front matter, tags: matryoshka", False),
        ("---\ntags: [unclosed\n---\n", False),
        (None, False),
    ],
)
def test_matryoshka_models_are_known_by_their_card_tags(
    tmp_path: Path, card: str | None, matryoshka: bool
) -> None:
    from backends.embeddings.sentence_transformers import trained_for_truncation

    if card is not None:
        (tmp_path / "README.md").write_text(card)
    assert trained_for_truncation(tmp_path) is matryoshka
