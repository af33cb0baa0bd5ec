"""Turning the result dicts of an ExLlama dynamic generator into :class:`GenerationChunk` objects.

ExLlamaV2 and ExLlamaV3 stream the same shapes (docs/exllama.md, section 6): a
``started`` and some ``prefill`` results, then ``streaming`` results with ``text`` (absent while
text is held back) and ``token_ids`` of shape (1, n), optional ``logits`` of shape (1, n, vocab)
and a final one with ``eos``, ``eos_reason``, counts and timings. When a stop *token* ends the
job, what was still held sits in ``held`` with the stop token's own piece at its end; a stop
*string* leaves in ``text`` only what came before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from backends.base import FinishReason, GenerationChunk, GenerationStats, TokenLogprob

FINISH_REASONS: dict[str, FinishReason] = {"max_new_tokens": "length"}


@dataclass
class ResultReader:
    """Reads the results of one job.

    ``piece`` gives the text of a token (for logprobs and to strip a stop token's piece);
    ``logprobs`` is the number of top alternatives wanted per token, or None for no logprobs;
    ``vocab_size`` masks the padding columns of the logits; ``tokens_outlive_rewind`` works
    around ExLlamaV2 0.3.2, which keeps the tokens of a rewound banned string in the next
    ``token_ids`` (its text and logits are rewound correctly).
    """

    piece: Callable[[int], str]
    vocab_size: int
    logprobs: int | None = None
    tokens_outlive_rewind: bool = False

    def read(self, result: dict[str, Any]) -> GenerationChunk | None:
        if result.get("stage") != "streaming":
            return None
        if result.get("eos"):
            return self._final(result)
        text = result.get("text", "")
        token_ids = _ids(result.get("token_ids"))
        if self.tokens_outlive_rewind and "suppressed_tokens" in result:
            suppressed = _ids(result["suppressed_tokens"])
            if suppressed and token_ids[-len(suppressed) :] == suppressed:
                token_ids = token_ids[: -len(suppressed)]
        if not text and not token_ids:
            return None
        return GenerationChunk(
            text=text, token_ids=token_ids, logprobs=self._logprobs(result, token_ids)
        )

    def _final(self, result: dict[str, Any]) -> GenerationChunk:
        reason = result.get("eos_reason", "")
        text = result.get("text", "")
        token_ids = _ids(result.get("token_ids"))
        logits_from: dict[str, Any] = result
        stop_reason: str | int | None = None
        if reason == "stop_token":
            stop_token = int(result["eos_triggering_token_id"])
            stop_reason = stop_token
            held = result.get("held") or {}
            token_ids = _ids(held.get("token_ids"))[:-1]
            text = held.get("text", "").removesuffix(self.piece(stop_token))
            logits_from = held
        elif reason == "stop_string":
            stop_reason = result.get("eos_triggering_string")
        return GenerationChunk(
            text=text,
            token_ids=token_ids,
            logprobs=self._logprobs(logits_from, token_ids),
            finish_reason=FINISH_REASONS.get(reason, "stop"),
            stop_reason=stop_reason,
            stats=GenerationStats(
                prompt_tokens=int(result.get("prompt_tokens", 0)),
                completion_tokens=int(result.get("new_tokens", 0)),
                cached_tokens=int(result.get("cached_tokens", 0)),
                queue_time=float(result.get("time_enqueued", 0.0)),
                prefill_time=float(result.get("time_prefill", 0.0)),
                generate_time=float(result.get("time_generate", 0.0)),
            ),
        )

    def _logprobs(self, source: dict[str, Any], token_ids: list[int]) -> list[TokenLogprob] | None:
        if self.logprobs is None:
            return None
        logits = source.get("logits")
        if logits is None or not token_ids:
            return []
        rows = logits[0, : len(token_ids)].float()
        rows[:, self.vocab_size :] = float("-inf")
        log_probs = torch.log_softmax(rows, dim=-1)
        records = []
        for row, token in zip(log_probs, token_ids, strict=False):
            record = TokenLogprob(
                token_id=token, token=self.piece(token), logprob=float(row[token])
            )
            if self.logprobs > 0:
                values, ids = torch.topk(row, self.logprobs)
                record.top = [
                    (int(i), self.piece(int(i)), float(v)) for v, i in zip(values, ids, strict=True)
                ]
            records.append(record)
        return records


def _ids(tensor: Any) -> list[int]:
    if tensor is None:
        return []
    return [int(t) for t in tensor.reshape(-1).tolist()]
