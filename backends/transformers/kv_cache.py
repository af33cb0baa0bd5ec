"""A K/V cache for a batch whose sequences join and leave at any step.

Rows are right-aligned: row ``r`` holds its ``lengths[r]`` cached tokens in the last columns of
every layer's ``[batch, heads, width, head_dim]`` tensors, with padding on the left that the
attention mask hides. Sequences that join are prefilled (alone, or several short prompts together,
left-padded in the same layout) and then merged in; one that leaves is dropped and the padding
every remaining row shares is trimmed.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _set_layers(cache: DynamicCache, tensors: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for layer, (keys, values) in zip(cache.layers, tensors, strict=True):
        layer.keys, layer.values = keys, values


def _pad_left(tensor: torch.Tensor, amount: int) -> torch.Tensor:
    if amount == 0:
        return tensor
    shape = list(tensor.shape)
    shape[2] = amount
    return torch.cat([tensor.new_zeros(shape), tensor], dim=2)


class BatchCache:
    """The batch's DynamicCache plus the length of each row."""

    def __init__(self) -> None:
        self.cache: DynamicCache | None = None
        self.lengths: list[int] = []

    @property
    def width(self) -> int:
        if self.cache is None or not self.cache.layers:
            return 0
        return self.cache.layers[0].keys.shape[2]

    @property
    def padded(self) -> bool:
        """Whether some row is shorter than the cache (and needs a mask to hide its padding)."""
        width = self.width
        return any(length != width for length in self.lengths)

    @property
    def rows(self) -> int:
        return len(self.lengths)

    def add(self, joining: DynamicCache, lengths: list[int]) -> list[int]:
        """Merge a cache of right-aligned rows holding ``lengths`` tokens; their row indexes."""
        first = len(self.lengths)
        if self.cache is None:
            self.cache, self.lengths = joining, list(lengths)
            return list(range(len(lengths)))
        theirs = joining.layers[0].keys.shape[2]
        width = max(self.width, theirs)
        ours_pad, theirs_pad = width - self.width, width - theirs
        merged = [
            (
                torch.cat([_pad_left(bk, ours_pad), _pad_left(jk, theirs_pad)]),
                torch.cat([_pad_left(bv, ours_pad), _pad_left(jv, theirs_pad)]),
            )
            for (bk, bv), (jk, jv) in zip(_layers(self.cache), _layers(joining), strict=True)
        ]
        _set_layers(self.cache, merged)
        self.lengths += lengths
        return list(range(first, len(self.lengths)))

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order) and trim padding no row needs."""
        if not rows:
            self.cache, self.lengths = None, []
            return
        assert self.cache is not None
        lengths = [self.lengths[r] for r in rows]
        trim = self.width - max(lengths)
        index = torch.tensor(rows, dtype=torch.long)
        _set_layers(
            self.cache,
            [
                (
                    keys.index_select(0, index)[:, :, trim:],
                    values.index_select(0, index)[:, :, trim:],
                )
                for keys, values in _layers(self.cache)
            ],
        )
        self.lengths = lengths

    def grew(self) -> None:
        """Every row took one more token in the last forward pass."""
        self.lengths = [length + 1 for length in self.lengths]

    def rewind(self, row: int, count: int) -> None:
        """Drop the last ``count`` tokens of ``row`` (the row shifts right, padding grows)."""
        if count <= 0:
            return
        assert self.cache is not None
        for layer in self.cache.layers:
            for tensor in (layer.keys, layer.values):
                tensor[row, :, count:] = tensor[row, :, :-count].clone()
                tensor[row, :, :count] = 0
        self.lengths[row] -= count

    def attention_mask(self, extra: int = 1) -> torch.Tensor:
        """Mask for a forward pass that adds ``extra`` columns to every row."""
        width = self.width + extra
        columns = torch.arange(width)
        starts = torch.tensor([self.width - n for n in self.lengths]).unsqueeze(1)
        return (columns.unsqueeze(0) >= starts).long()
