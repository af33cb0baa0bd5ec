"""Continuous batching on llama.cpp: Serval's scheduler and samplers, llama.cpp's forward pass.

The scheduling, sampling, grammar, stop strings and logprobs are those of the transformers
engine (backends/transformers/batch.py); this class replaces only its forward passes and its
cache. Each sequence holds a llama.cpp sequence id (a slot) from the start of its prefill until
it leaves; a decode step feeds the pending token of every running sequence in one call. Prompts
prefilled together that are the same token for token are computed once: the others share its
cache cells (llama.cpp's unified cache gives a cell several sequence ids).
"""

from __future__ import annotations

from typing import Any

import torch

from backends.llamacpp.model import Entry, LlamaModel
from backends.transformers.batch import BatchScheduler, Sequence


class LlamaCppScheduler(BatchScheduler):
    def __init__(self, llama: LlamaModel, **settings: Any) -> None:
        super().__init__(model=None, device=torch.device("cpu"), **settings)
        self.llama = llama
        self.free_slots = list(range(self.max_batch_size))
        self.slot_of: dict[Sequence, int] = {}
        self.lengths: dict[int, int] = {}  # cached positions of each slot in use

    def _new_prefill(self, sequence: Sequence) -> Any:
        slot = self.free_slots.pop()
        self.slot_of[sequence] = slot
        self.lengths[slot] = 0
        return slot

    def _release_slot(self, sequence: Sequence) -> None:
        slot = self.slot_of.pop(sequence, None)
        if slot is not None:
            self.llama.forget(slot)
            del self.lengths[slot]
            self.free_slots.append(slot)

    def _feed(self, sequence: Sequence, tokens: list[int], every_position: bool) -> list[Entry]:
        slot = self.slot_of[sequence]
        start = self.lengths[slot]
        self.lengths[slot] = start + len(tokens)
        last = len(tokens) - 1
        return [
            Entry(token, start + offset, slot, every_position or offset == last)
            for offset, token in enumerate(tokens)
        ]

    def _forward_prompts(self, group: list[Sequence]) -> tuple[list[int], torch.Tensor]:
        """One pass over the distinct prompts of ``group``; a prompt met again (the ``n``
        choices of one request, clients sending the same chat) shares the cache cells of its
        first copy instead of being computed again."""
        entries: list[Entry] = []
        first_of: dict[tuple[int, ...], Sequence] = {}
        for sequence in group:
            prompt = sequence.request.prompt_ids
            if first_of.setdefault(tuple(prompt), sequence) is sequence:
                entries += self._feed(sequence, prompt, False)
        logits = self.llama.decode(entries)
        row_of = {source: row for row, source in enumerate(first_of.values())}
        rows: list[int] = []
        for sequence in group:
            source = first_of[tuple(sequence.request.prompt_ids)]
            if source is not sequence:
                self.llama.share(self.slot_of[source], self.slot_of[sequence])
                self.lengths[self.slot_of[sequence]] = self.lengths[self.slot_of[source]]
            rows.append(row_of[source])
        first = len(self.active)
        return list(range(first, first + len(group))), logits[rows]

    def _forward_chunk(
        self, sequence: Sequence, start: int, end: int, every_position: bool
    ) -> torch.Tensor:
        tokens = sequence.request.prompt_ids[start:end]
        return self.llama.decode(self._feed(sequence, tokens, every_position))

    def _join(self, sequence: Sequence) -> list[int]:
        return [len(self.active)]

    def _forward_decode(self, tokens: list[int | None]) -> torch.Tensor:
        entries: list[Entry] = []
        for sequence, token in zip(self.active, tokens, strict=True):
            assert token is not None
            entries += self._feed(sequence, [token], True)
        return self.llama.decode(entries)

    def _keep_rows(self, rows: list[int], dropped: list[Sequence]) -> None:
        for sequence in dropped:
            self._release_slot(sequence)

    def _abandon(self, sequence: Sequence) -> None:
        super()._abandon(sequence)
        self._release_slot(sequence)

    def _reset_cache(self) -> None:
        self.llama.clear()
        self.free_slots = list(range(self.max_batch_size))
        self.slot_of, self.lengths = {}, {}

    def _rewind(self, row: int, tokens: int) -> None:
        slot = self.slot_of[self.active[row]]
        self.lengths[slot] -= tokens
        self.llama.forget(slot, self.lengths[slot])
