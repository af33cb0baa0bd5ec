"""llguidance as an ExLlamaV2 filter: the request's grammar masks the logits at every step.

ExLlamaV2 has no llguidance support of its own. This filter takes the mask path of the 0.3.2
sampler (``can_mask_logits``), computing the next mask on the generator's filter thread pool
while the GPU runs the forward pass. When the grammar is complete the mask allows only EOS,
which is among the job's stop tokens, so the job ends there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import llguidance
import torch
from exllamav2.generator.filters import ExLlamaV2Filter
from loguru import logger

from backends.grammar_threads import allowed_tokens, build_matcher, fit_mask


def make_ll_tokenizer(
    hf_tokenizer: Any, vocab_size: int, eos_ids: Sequence[int]
) -> llguidance.LLTokenizer:
    """An llguidance tokenizer from the ``tokenizers`` object inside ExLlamaV2's tokenizer."""
    return llguidance.LLTokenizer(
        hf_tokenizer.to_str(), n_vocab=vocab_size, eos_token=list(eos_ids)
    )


class GrammarFilter(ExLlamaV2Filter):
    """Constrains one job to an llguidance grammar (a :class:`GrammarSpec`'s text)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        ll_tokenizer: llguidance.LLTokenizer,
        grammar: str,
        eos_ids: Sequence[int],
    ) -> None:
        super().__init__(model, tokenizer)
        self.ll_tokenizer = ll_tokenizer
        self.grammar = grammar
        self.eos_ids = list(eos_ids)
        self.matcher = build_matcher(ll_tokenizer, grammar)
        self.allowed: torch.Tensor | None = None

    def clone(self, c: Any = None) -> GrammarFilter:
        copy = GrammarFilter.__new__(GrammarFilter)
        super().clone(copy)
        copy.ll_tokenizer = self.ll_tokenizer
        copy.grammar = self.grammar
        copy.eos_ids = self.eos_ids
        copy.matcher = self.matcher.deep_copy()
        copy.allowed = None
        return copy

    def begin(self, prefix_str: str) -> None:
        """A job starts: the matcher is new, so there is nothing to do."""

    def feed(self, token: torch.Tensor) -> None:
        if not self.matcher.is_stopped() and not self.matcher.is_error():
            self.matcher.consume_token(int(token.reshape(-1)[0]))

    def use_background_worker(self) -> bool:
        return True

    def can_mask_logits(self) -> bool:
        return True

    def prepare_logit_mask(self) -> bool:
        self.allowed = self._allowed_tokens()
        return True

    def mask_logits(self, logits: torch.Tensor) -> torch.Tensor:
        allowed = self.allowed if self.allowed is not None else self._allowed_tokens()
        self.allowed = None
        return logits.masked_fill_(~fit_mask(allowed, logits.shape[-1]), float("-inf"))

    def next(self) -> tuple[list[int], list[int]]:
        """The token-list interface, for samplers that do not take masks."""
        return torch.nonzero(self._allowed_tokens()).reshape(-1).tolist(), []

    def _allowed_tokens(self) -> torch.Tensor:
        """A bool per token. A matcher in error allows only EOS, ending the job cleanly."""
        if self.matcher.is_error():
            logger.warning(f"grammar matcher failed: {self.matcher.get_error()}; ending the job")
            allowed = torch.zeros(self.ll_tokenizer.vocab_size, dtype=torch.bool)
            allowed[self.eos_ids] = True
            return allowed
        return allowed_tokens(self.matcher, self.ll_tokenizer.vocab_size)
