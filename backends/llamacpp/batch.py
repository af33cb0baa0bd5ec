"""Continuous batching on llama.cpp: Serval's scheduler and samplers, llama.cpp's forward pass.

The scheduling, sampling, grammar, stop strings and logprobs are those of the transformers
engine (backends/transformers/batch.py); this class replaces only its forward passes and its
cache. Each sequence holds a llama.cpp sequence id (a slot) from the start of its prefill until
it leaves; a decode step feeds the pending token of every running sequence in one call. Prompts
prefilled together that are the same token for token are computed once: the others share its
cache cells (llama.cpp's unified cache gives a cell several sequence ids).

A slot keeps its cells when its sequence leaves. A new prompt takes the free slot whose cached
tokens begin it the longest way (a chat's next turn resends the conversation so far) and is fed
only from there, as llama.cpp's own server and KoboldCpp do; the tokens taken from the cache are
the request's ``cached_tokens``. When the cache has no room for a pass, the free slots' cells
are dropped and the pass runs again. A sequence starts only when the cache can hold it to its end
beside the running ones; until then it waits.
"""

from __future__ import annotations

from typing import Any

import torch

from backends.llamacpp.model import CacheFullError, Entry, LlamaModel
from backends.transformers.batch import BatchScheduler, Sequence


class LlamaCppScheduler(BatchScheduler):
    def __init__(self, llama: LlamaModel, cache_tokens: int, **settings: Any) -> None:
        super().__init__(model=None, device=torch.device("cpu"), **settings)
        self.llama = llama
        self.cache_tokens = cache_tokens
        self._reset_cache()

    def clear_cache(self) -> None:
        """Drop every cached token (the weights changed: a LoRA); only while no job runs."""
        self._reset_cache()

    # ----- slots and what they hold ---------------------------------------------------------

    def _new_prefill(self, sequence: Sequence) -> Any:
        """A free slot for ``sequence``: the one whose cached tokens begin its prompt the
        longest way (its prefill starts after them), else the one left longest ago."""
        prompt = sequence.request.prompt_ids
        reusable = not sequence.request.prompt_logprobs  # those need every position's logits
        best, reused = self.free_slots[0], 0
        for slot in self.free_slots if reusable else ():
            # At least the prompt's last token is fed again: its logits give the first token.
            length = _common_prefix(self.cached[slot], prompt, len(prompt) - 1)
            if length > reused:
                best, reused = slot, length
        self.free_slots.remove(best)
        self.slot_of[sequence] = best
        self._truncate(best, reused)
        sequence.prefilled = sequence.cached_tokens = reused
        return best

    def _has_room(self, sequence: Sequence, taken: list[Sequence]) -> bool:
        """A sequence starts only when the cache can hold every running one to its end (its
        prompt and ``max_new_tokens``, counted as if no cells were shared) beside it, so none
        fails half-way with a full cache; it waits for room instead. The tokens free slots
        keep do not count: they are dropped when room is needed. Alone, a sequence always
        starts (one longer than the cache then fails with the reason)."""
        if sequence in self.slot_of:  # its prefill is under way: it was let in
            return True
        in_use = {*self.slot_of, *(member for s in taken for member in s.members)}
        if not in_use:
            return True
        need = sum(_reserved(member) for member in [*in_use, *sequence.members])
        return need <= self.cache_tokens

    def _release_slot(self, sequence: Sequence) -> None:
        """The slot is free again and keeps its cells for a prompt that begins with them."""
        slot = self.slot_of.pop(sequence, None)
        if slot is not None:
            self.free_slots.append(slot)

    def _truncate(self, slot: int, length: int) -> None:
        del self.cached[slot][length:]
        self.llama.forget(slot, length)

    def _drop_free_slots(self) -> bool:
        """Forget what the free slots hold; whether they held anything."""
        held = [slot for slot in self.free_slots if self.cached[slot]]
        for slot in held:
            self._truncate(slot, 0)
        return bool(held)

    def _reset_cache(self) -> None:
        self.llama.clear()
        self.free_slots = list(range(self.max_batch_size))
        self.slot_of: dict[Sequence, int] = {}
        # The tokens each slot's cells hold, by position, for a slot in use or free.
        self.cached: dict[int, list[int]] = {slot: [] for slot in self.free_slots}

    # ----- forward passes -------------------------------------------------------------------

    def _decode(self, entries: list[Entry]) -> torch.Tensor:
        try:
            return self.llama.decode(entries)
        except CacheFullError:
            if not self._drop_free_slots():
                raise
            return self.llama.decode(entries)

    def _feed(self, sequence: Sequence, tokens: list[int], every_position: bool) -> list[Entry]:
        slot = self.slot_of[sequence]
        cached = self.cached[slot]
        start = len(cached)
        cached += tokens
        last = len(tokens) - 1
        return [
            Entry(token, start + offset, slot, every_position or offset == last)
            for offset, token in enumerate(tokens)
        ]

    def _forward_prompts(self, group: list[Sequence]) -> tuple[list[int], torch.Tensor]:
        """One pass over the distinct prompts of ``group`` (each from where its cached tokens
        end); a prompt met again (the ``n`` choices of one request, clients sending the same
        chat) shares the cache cells of its first copy instead of being computed again."""
        entries: list[Entry] = []
        first_of: dict[tuple[int, ...], Sequence] = {}
        for sequence in group:
            prompt = sequence.request.prompt_ids
            if first_of.setdefault(tuple(prompt), sequence) is sequence:
                entries += self._feed(sequence, prompt[sequence.prefilled :], False)
        logits = self._decode(entries)
        row_of = {source: row for row, source in enumerate(first_of.values())}
        rows: list[int] = []
        for sequence in group:
            source = first_of[tuple(sequence.request.prompt_ids)]
            if source is not sequence:
                target = self.slot_of[sequence]
                self._truncate(target, 0)
                self.llama.share(self.slot_of[source], target)
                self.cached[target] = list(self.cached[self.slot_of[source]])
            rows.append(row_of[source])
        first = len(self.active)
        return list(range(first, first + len(group))), logits[rows]

    def _forward_chunk(
        self, sequence: Sequence, start: int, end: int, every_position: bool
    ) -> torch.Tensor:
        tokens = sequence.request.prompt_ids[start:end]
        return self._decode(self._feed(sequence, tokens, every_position))

    def _join(self, sequence: Sequence) -> list[int]:
        return [len(self.active)]

    def _forward_decode(self, tokens: list[int | None]) -> torch.Tensor:
        entries: list[Entry] = []
        for sequence, token in zip(self.active, tokens, strict=True):
            assert token is not None
            entries += self._feed(sequence, [token], True)
        return self._decode(entries)

    def _keep_rows(self, rows: list[int], dropped: list[Sequence]) -> None:
        for sequence in dropped:
            self._release_slot(sequence)

    def _abandon(self, sequence: Sequence) -> None:
        super()._abandon(sequence)
        self._release_slot(sequence)

    def _rewind(self, row: int, tokens: int) -> None:
        slot = self.slot_of[self.active[row]]
        self._truncate(slot, len(self.cached[slot]) - tokens)


def _reserved(sequence: Sequence) -> int:
    """The cache cells ``sequence`` may take by its end."""
    return len(sequence.request.prompt_ids) + sequence.request.max_new_tokens


def _common_prefix(cached: list[int], prompt: list[int], limit: int) -> int:
    """How many first tokens ``cached`` and ``prompt`` share, at most ``limit``."""
    length = 0
    for held, wanted in zip(cached, prompt[:limit], strict=False):
        if held != wanted:
            break
        length += 1
    return length
