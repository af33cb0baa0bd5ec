"""Continuous batching for the transformers engine, in steps on the compute thread.

Every request is a :class:`Sequence`. Each step prefills one chunk of a waiting sequence's
prompt (all prompt tokens but the last; once done it joins the running batch) and runs one decode
step for the whole batch: the last token of every row goes in, one token per row comes out. A new
request joins at the next step; a finished or cancelled one leaves at once. A step in which
sequences join (with their first tokens) skips the decode pass, and the step after it decodes
without prefilling, so the running rows get a token at least every other step however many
requests keep arriving. A CFG sequence (``cfg_scale`` other than 1) carries a hidden companion
row for its negative prompt: prefilled with it before the sequence's own prompt, fed the same
sampled token each step, its logits mixed into the sequence's before the samplers
(``guided_logits``); it takes a row of the batch, leaves with its sequence, and never shows in
the output or the job counts. Waiting sequences join in turns across their owners (one owner's
first waiting sequence, then the next owner's, ...), and no owner holds more than its share of
the rows, so one request with many choices cannot keep others out of the batch. Steps run on the
process's compute thread (backends/compute.py) and queue the next one while there is work, so
other tensor work (embeddings, LoRA changes) takes its turn between them. The event loop only
ever waits on an ``asyncio.Queue`` that the steps fill.
"""

from __future__ import annotations

import asyncio
import math
import queue
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from loguru import logger
from transformers import DynamicCache

from backends import compute
from backends.base import (
    GenerationChunk,
    GenerationRequest,
    GenerationStats,
    ImageInput,
    TokenLogprob,
    put_threadsafe,
)
from backends.grammar_threads import allowed_tokens
from backends.sampling import SamplingParams
from backends.text_stream import BannedMatch, IncrementalDecoder, StopMatch, TextGate
from backends.transformers.kv_cache import BatchCache
from backends.transformers.samplers import (
    SamplerContext,
    VocabIndex,
    apply_transforms,
    choose_token,
    guided_logits,
    takes_the_top_logit,
)
from common.errors import GenerationError, UnavailableError

Emit = Callable[[GenerationChunk | BaseException], None]
# The input embeddings of a prompt with images: ``[1, len(prompt_ids), hidden]``.
PromptEmbeds = Callable[[list[int], tuple[ImageInput, ...]], torch.Tensor]
# After sequences join, the compute thread pauses this long (seconds) so the event loop can send
# their first tokens before the next forward pass takes both cores: measured, it cuts the
# streamed time to first token from ~60 to ~40 ms on 2 cores.
JOIN_PAUSE = 0.002


@dataclass(eq=False)
class Sequence:
    request: GenerationRequest
    emit: Emit
    context: SamplerContext
    decoder: IncrementalDecoder
    gate: TextGate
    matcher: Any = None
    cancelled: bool = False
    finished: bool = False
    # The forward pass's state for a prefill under way (the transformers engine: its
    # DynamicCache; llama.cpp: its sequence id); None before it starts and once it joined.
    prefill_cache: Any = None
    # A prompt with images is prefilled from its input embeddings (text and image features).
    prompt_embeds: torch.Tensor | None = None
    prefilled: int = 0
    # Prompt tokens the engine found in its cache (llama.cpp's slots), fed no more.
    cached_tokens: int = 0
    pending_token: int | None = None
    banned_at: dict[int, set[int]] = field(default_factory=dict)
    held_records: list[tuple[int, TokenLogprob | None]] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    submitted_at: float = field(default_factory=time.perf_counter)
    prefill_started: float = 0.0
    first_token_at: float = 0.0
    # CFG: the hidden row of the negative prompt (on the sequence it guides), and on that row
    # the sequence it guides and the logits of its prompt's end (kept until the sequence joins).
    negative: Sequence | None = None
    guides: Sequence | None = None
    last_logits: torch.Tensor | None = None

    @property
    def token_ids(self) -> list[int]:
        return self.context.token_ids

    @property
    def members(self) -> list[Sequence]:
        """The rows this sequence takes in the batch: its own, and its negative prompt's."""
        return [self] if self.negative is None else [self, self.negative]

    @property
    def generated(self) -> int:
        return self.context.generated


def _hidden(item: GenerationChunk | BaseException) -> None:
    """Where a companion row's output goes: nowhere (its sequence reports for both)."""


def _logprob_record(
    raw_logits: torch.Tensor, token: int, top: int, piece: Callable[[int], str]
) -> TokenLogprob:
    log_probs = torch.log_softmax(raw_logits, dim=-1)
    record = TokenLogprob(token_id=token, token=piece(token), logprob=float(log_probs[token]))
    if top > 0:
        values, ids = torch.topk(log_probs, top)
        record.top = [(int(i), piece(int(i)), float(v)) for v, i in zip(values, ids, strict=True)]
    return record


class BatchScheduler:
    """Runs the model for every active sequence; one instance per loaded model.

    The forward passes and the K/V cache are in the ``_forward_*``, ``_join``, ``_keep_rows``,
    ``_rewind``, ``_abandon`` and ``_reset_cache`` methods, here for a transformers model; an
    engine on another library overrides those and keeps the scheduling and sampling.
    """

    def __init__(
        self,
        model: Any,
        decode: Callable[[list[int]], str],
        piece: Callable[[int], str],
        device: torch.device,
        max_batch_size: int,
        chunk_size: int,
        owner_share: float = 1.0,
        vocab: VocabIndex | None = None,
        prompt_embeds: PromptEmbeds | None = None,
    ) -> None:
        self.model = model
        self.prompt_embeds = prompt_embeds
        self.vocab = vocab
        self.decode = decode
        self.piece = piece
        self.device = device
        self.max_batch_size = max_batch_size
        self.owner_rows = (
            max_batch_size if owner_share >= 1 else max(1, math.ceil(max_batch_size * owner_share))
        )
        self.chunk_size = chunk_size
        self.batch = BatchCache()
        self.active: list[Sequence] = []
        self.waiting: deque[Sequence] = deque()
        self._inbox: queue.SimpleQueue[Sequence] = queue.SimpleQueue()
        self._stopping = False
        self._scheduled = False
        self._decode_owed = False  # the last step joined sequences and decoded nothing
        self._lock = threading.Lock()

    # ----- called from the event loop -------------------------------------------------------

    def submit(
        self, request: GenerationRequest, emit: Emit, eos_ids: frozenset[int], matcher: Any = None
    ) -> Sequence:
        """Queue ``request``; ``matcher``: its grammar's llguidance matcher, built beforehand
        (never on the compute thread: a costly grammar would stall every row's step)."""
        sequence = self._sequence(request, emit, eos_ids, matcher)
        if self.applies_cfg(request.params):
            negative = replace(
                request,
                prompt_ids=list(request.params.negative_prompt_ids),
                logprobs=None,
                prompt_logprobs=False,
                grammar=None,
            )
            sequence.negative = self._sequence(negative, _hidden, eos_ids, None)
            sequence.negative.guides = sequence
        self._inbox.put(sequence)
        self._kick()
        return sequence

    def applies_cfg(self, params: SamplingParams) -> bool:
        """Whether a job of ``params`` runs with CFG: asked for, and two rows fit the batch."""
        return params.cfg and self.max_batch_size >= 2

    def _sequence(
        self, request: GenerationRequest, emit: Emit, eos_ids: frozenset[int], matcher: Any
    ) -> Sequence:
        params = request.params
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        context = SamplerContext(
            params=params,
            token_ids=list(request.prompt_ids),
            prompt_len=len(request.prompt_ids),
            eos_ids=eos_ids,
            generator=torch.Generator().manual_seed(seed),
            stop_ids=request.stop_token_ids,
            vocab=self.vocab,
        )
        return Sequence(
            request=request,
            emit=emit,
            context=context,
            decoder=IncrementalDecoder(self.decode, request.prompt_ids),
            gate=TextGate(request.stop_strings, params.banned_strings),
            matcher=matcher,
        )

    def cancel(self, sequence: Sequence) -> None:
        if not sequence.finished:
            sequence.cancelled = True
            self._kick()

    def stop(self) -> None:
        """Fail what is left and stop stepping (blocks until done: call it off the loop)."""
        self._stopping = True
        compute.submit(self._shutdown).result(timeout=60)

    @property
    def running(self) -> int:
        return len(self.jobs_running)

    @property
    def jobs_running(self) -> list[Sequence]:
        """The running sequences that are jobs (not the hidden rows of negative prompts)."""
        return [sequence for sequence in self.active if sequence.guides is None]

    @property
    def queued(self) -> int:
        return len(self.waiting) + self._inbox.qsize()

    def _kick(self) -> None:
        """Make sure a step is queued on the compute thread."""
        with self._lock:
            if self._scheduled or self._stopping:
                return
            self._scheduled = True
        compute.submit(self._step)

    # ----- on the compute thread ------------------------------------------------------------

    def _step(self) -> None:
        joined = False
        with torch.inference_mode():
            self._collect()
            self._drop_cancelled()
            try:
                owed = self._decode_owed and bool(self.active)
                if self.waiting and len(self.active) < self.max_batch_size and not owed:
                    joined = self._prefill()
                if self.active and not joined:
                    self._decode_step()
                self._decode_owed = joined
            except Exception as exc:  # a failed forward pass fails its batch, not the server
                logger.exception("generation step failed")
                self._fail_all(GenerationError(f"Generation failed: {exc}"))
        with self._lock:
            more = not self._stopping and bool(
                self.active or self.waiting or not self._inbox.empty()
            )
            self._scheduled = more
        if more:
            if joined:  # let the event loop send the first tokens before the next pass
                time.sleep(JOIN_PAUSE)
            compute.submit(self._step)

    def _shutdown(self) -> None:
        self._collect()
        self._fail_all(UnavailableError("The model was unloaded while this request ran."))

    def _collect(self) -> None:
        while True:
            try:
                self.waiting.append(self._inbox.get_nowait())
            except queue.Empty:
                return

    def _drop_cancelled(self) -> None:
        for sequence in [s for s in self.waiting if s.cancelled]:
            self.waiting.remove(sequence)
            for member in sequence.members:
                self._abandon(member)
                member.finished = True
        if any(s.cancelled for s in self.active):
            self._keep([s for s in self.active if not s.cancelled])

    def _keep(self, survivors: list[Sequence]) -> None:
        """Keep the rows of ``survivors``; a negative prompt's row leaves with its sequence."""
        survivors = [s for s in survivors if s.guides is None or s.guides in survivors]
        index = {id(s): row for row, s in enumerate(self.active)}
        dropped = [sequence for sequence in self.active if sequence not in survivors]
        for sequence in dropped:
            sequence.finished = True
        self._keep_rows([index[id(s)] for s in survivors], dropped)
        self.active = survivors

    def _keep_rows(self, rows: list[int], dropped: list[Sequence]) -> None:
        """Keep only the cache ``rows`` (in this order); ``dropped`` left the batch."""
        self.batch.keep(rows)

    def _abandon(self, sequence: Sequence) -> None:
        """Free what a prefill under way of a cancelled ``sequence`` holds."""
        sequence.prefill_cache = None
        sequence.prompt_embeds = None

    def _reset_cache(self) -> None:
        self.batch = BatchCache()

    def _fail_all(self, error: BaseException) -> None:
        for sequence in [*self.active, *self.waiting]:
            if not sequence.finished:
                sequence.finished = True
                sequence.emit(error)
        self.active, self.waiting = [], deque()
        self._reset_cache()

    def _start(self, sequence: Sequence) -> bool:
        """Begin a waiting sequence's prefill (and its negative prompt's)."""
        sequence.prefill_started = time.perf_counter()
        request = sequence.request
        if request.images:
            try:
                if self.prompt_embeds is None:
                    raise GenerationError("The loaded model does not take images.")
                sequence.prompt_embeds = self.prompt_embeds(request.prompt_ids, request.images)
            except Exception as exc:  # this sequence fails, the batch goes on
                logger.exception(f"request {request.request_id}: its images failed")
                self.waiting.remove(sequence)
                sequence.finished = True
                sequence.emit(GenerationError(f"Reading the images failed: {exc}"))
                return False
        for member in sequence.members:
            member.prefill_cache = self._new_prefill(member)
        if sequence.request.prompt_logprobs:
            sequence.prompt_logprobs = [None]
        return True

    def _new_prefill(self, sequence: Sequence) -> Any:
        """The forward pass's state for ``sequence``'s prefill (see ``Sequence.prefill_cache``)."""
        return DynamicCache()

    def _prefill(self) -> bool:
        """Prefill what may join: several short prompts together in one pass, else one chunk
        of the first prompt. True when sequences joined the batch (with their first token)."""
        turns = self._turns()
        if not turns:
            return False
        group = self._short_prompts(turns)
        if sum(len(sequence.members) for sequence in group) > 1:  # a CFG job has two prompts
            return self._prefill_together(group)
        return self._prefill_step(turns[0])

    def _turns(self) -> list[Sequence]:
        """Waiting sequences that may join, in turn order: a prefill under way first, then
        round by round across owners (each owner's first waiting sequence, then each one's
        second, ...); those of an owner at its share of the rows wait, and so does everyone
        after a sequence whose rows (two with CFG) are not free yet."""
        free = self.max_batch_size - len(self.active)
        rows = Counter(sequence.request.owner for sequence in self.active)
        places: Counter[str] = Counter()
        ranked: list[tuple[bool, int, Sequence]] = []
        for sequence in self.waiting:
            owner = sequence.request.owner
            ranked.append((sequence.prefill_cache is None, places[owner], sequence))
            places[owner] += 1
        turns: list[Sequence] = []
        for _, _, sequence in sorted(ranked, key=lambda entry: entry[:2]):
            owner = sequence.request.owner
            need = len(sequence.members)
            if need > free or not self._has_room(sequence, turns):
                break
            if rows[owner] < self.owner_rows or sequence.prefill_cache is not None:
                turns.append(sequence)
                rows[owner] += need
                free -= need
        return turns

    def _has_room(self, sequence: Sequence, taken: list[Sequence]) -> bool:
        """Whether the cache can hold ``sequence`` to its end beside the running ones and those
        ``taken`` before it this turn (the transformers engine's cache grows as it needs)."""
        return True

    def _short_prompts(self, turns: list[Sequence]) -> list[Sequence]:
        """Sequences (from the front of ``turns``) whose whole prompts fit in one pass."""
        group: list[Sequence] = []
        budget = self.chunk_size * 2
        for sequence in turns:
            size = sum(len(member.request.prompt_ids) for member in sequence.members)
            started = sequence.prefill_cache is not None
            alone = sequence.request.prompt_logprobs or sequence.request.images
            if started or alone or size > budget:
                break
            group.append(sequence)
            budget -= size
        return group

    def _prefill_together(self, group: list[Sequence]) -> bool:
        """One forward pass over several left-padded prompts; each joins with its first token."""
        group = [sequence for sequence in group if self._start(sequence)]
        if not group:
            return False
        members = [member for sequence in group for member in sequence.members]
        rows, logits = self._forward_prompts(members)
        for member in members:
            member.prefill_cache = None
            member.prefilled = len(member.request.prompt_ids)
        for sequence in group:
            self.waiting.remove(sequence)
        self.active += members
        at = {id(member): place for place, member in enumerate(members)}
        self._first_tokens(
            group,
            [rows[at[id(sequence)]] for sequence in group],
            [self._mixed(sequence, logits, at) for sequence in group],
        )
        return True

    def _mixed(self, sequence: Sequence, logits: torch.Tensor, at: dict[int, int]) -> torch.Tensor:
        """The logits ``sequence`` samples from, out of ``logits`` whose row ``at[id(member)]``
        is each member's: its own, mixed with its negative prompt's under CFG."""
        own = logits[at[id(sequence)]]
        if sequence.negative is None:
            return own
        negative = logits[at[id(sequence.negative)]]
        return guided_logits(own, negative, sequence.request.params.cfg_scale)

    def _forward_prompts(self, group: list[Sequence]) -> tuple[list[int], torch.Tensor]:
        """One pass over the whole prompts of ``group``, which join the batch: their rows in
        it and the logits of each prompt's last token (``[len(group), vocab]``, on the CPU)."""
        prompts = [sequence.request.prompt_ids for sequence in group]
        width = max(len(prompt) for prompt in prompts)
        ids = torch.zeros((len(group), width), dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = DynamicCache()
        output = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        rows = self.batch.add(cache, [len(prompt) for prompt in prompts])
        return rows, output.logits[:, -1, :].float().cpu()

    def _first_tokens(
        self, group: list[Sequence], rows: list[int], logits: Iterable[torch.Tensor]
    ) -> None:
        """Sample the first token of sequences that just joined the batch at ``rows``."""
        finished: list[Sequence] = []
        for sequence, row, row_logits in zip(group, rows, logits, strict=True):
            if sequence.request.max_new_tokens == 0:  # scoring the prompt only (echo)
                sequence.first_token_at = time.perf_counter()
                finished.append(sequence)
                self._finish(sequence, "length", None)
            elif self._advance(sequence, row, row_logits, None):
                finished.append(sequence)
        if finished:
            self._keep([s for s in self.active if s not in finished])

    def _prefill_step(self, sequence: Sequence) -> bool:
        """Feed the next chunk of a waiting sequence's prompt. After the last chunk the sequence
        joins the batch with its first token already sampled from the prompt's last logits."""
        if sequence.prefill_cache is None and not self._start(sequence):
            return False
        negative = sequence.negative
        if negative is not None and negative.prefilled < len(negative.request.prompt_ids):
            self._prefill_negative(negative)
            return False
        want_logits = sequence.prompt_logprobs is not None
        start = sequence.prefilled
        logits, done = self._next_chunk(sequence, want_logits)
        if want_logits:
            self._record_prompt_logprobs(sequence, logits, start)
        if not done:
            return False
        self.waiting.remove(sequence)
        rows = self._join(sequence)
        sequence.prefill_cache = None
        sequence.prompt_embeds = None
        self.active.append(sequence)
        last = logits[-1].cpu()
        if negative is not None:
            self._join(negative)
            negative.prefill_cache = None
            self.active.append(negative)
            assert negative.last_logits is not None
            last = guided_logits(last, negative.last_logits, sequence.request.params.cfg_scale)
            negative.last_logits = None
        self._first_tokens([sequence], rows, [last])
        return True

    def _prefill_negative(self, negative: Sequence) -> None:
        """Feed the next chunk of a negative prompt (before the prompt it guides)."""
        logits, done = self._next_chunk(negative, False)
        if done:
            negative.last_logits = logits[-1].cpu()

    def _next_chunk(self, sequence: Sequence, every_position: bool) -> tuple[torch.Tensor, bool]:
        """Feed the next chunk of ``sequence``'s prompt: its logits (see ``_forward_chunk``),
        and whether that was the prompt's last chunk."""
        prompt = sequence.request.prompt_ids
        start = sequence.prefilled
        end = min(start + self.chunk_size, len(prompt))
        logits = self._forward_chunk(sequence, start, end, every_position)
        sequence.prefilled = end
        return logits, end == len(prompt)

    def _forward_chunk(
        self, sequence: Sequence, start: int, end: int, every_position: bool
    ) -> torch.Tensor:
        """Feed prompt tokens ``start:end`` of ``sequence``; the logits of every position
        (``[end - start, vocab]``) with ``every_position``, else of the last (``[1, vocab]``)."""
        if sequence.prompt_embeds is not None:
            tokens: dict[str, torch.Tensor] = {
                "inputs_embeds": sequence.prompt_embeds[:, start:end]
            }
        else:
            ids = sequence.request.prompt_ids[start:end]
            tokens = {"input_ids": torch.tensor([ids], device=self.device)}
        output = self.model(
            **tokens,
            cache=sequence.prefill_cache,
            use_cache=True,
            logits_to_keep=0 if every_position else 1,
        )
        logits: torch.Tensor = output.logits[0].float()
        return logits

    def _join(self, sequence: Sequence) -> list[int]:
        """Put ``sequence``'s prefilled cache in the batch; its row there (as a list)."""
        return self.batch.add(sequence.prefill_cache, [len(sequence.request.prompt_ids)])

    def _record_prompt_logprobs(self, sequence: Sequence, logits: torch.Tensor, start: int) -> None:
        """Logprobs of the prompt tokens that ``logits`` (from position ``start``) predict."""
        assert sequence.prompt_logprobs is not None
        prompt = sequence.request.prompt_ids
        top = sequence.request.logprobs or 0
        for offset, row in enumerate(logits):
            position = start + offset + 1
            if position < len(prompt):
                record = _logprob_record(row.cpu(), prompt[position], top, self.piece)
                sequence.prompt_logprobs.append(record)

    def _decode_step(self) -> None:
        logits = self._forward_decode([s.pending_token for s in self.active])
        at = {id(sequence): row for row, sequence in enumerate(self.active)}
        finished: list[Sequence] = []
        tops = self._top_tokens(self.active, logits)
        for row, sequence in enumerate(self.active):
            if sequence.guides is not None:
                continue  # a negative prompt's row: its logits are mixed into its sequence's
            try:
                if self._advance(sequence, row, self._mixed(sequence, logits, at), tops[row]):
                    finished.append(sequence)
            except Exception as exc:  # one sequence's failure does not stop the others
                logger.exception(f"request {sequence.request.request_id} failed")
                sequence.emit(GenerationError(f"Generation failed: {exc}"))
                finished.append(sequence)
        if finished:
            self._keep([s for s in self.active if s not in finished])

    def _forward_decode(self, tokens: list[int | None]) -> torch.Tensor:
        """One decode pass: ``tokens[row]`` goes in for each row; ``[rows, vocab]`` logits."""
        input_ids = torch.tensor([[t] for t in tokens], device=self.device)
        positions = torch.tensor([[n] for n in self.batch.lengths], device=self.device)
        mask = self.batch.attention_mask(1).to(self.device) if self.batch.padded else None
        output = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            cache=self.batch.cache,
            use_cache=True,
        )
        self.batch.grew()
        logits: torch.Tensor = output.logits[:, -1, :].float().cpu()
        return logits

    def _top_tokens(self, rows: list[Sequence], logits: torch.Tensor) -> list[int | None]:
        """For each of ``rows`` (with its ``logits`` row): the most likely token where that is
        the whole choice (see ``takes_the_top_logit``), from one argmax over the batch; None
        where the row's samplers, grammar or CFG must run."""
        plain = [
            sequence.matcher is None
            and sequence.negative is None
            and sequence.guides is None
            and takes_the_top_logit(
                sequence.context, sequence.banned_at.get(len(sequence.token_ids), ())
            )
            for sequence in rows
        ]
        if not any(plain):
            return [None] * len(rows)
        tops: list[int] = logits.numpy().argmax(axis=-1).tolist()  # numpy's: 20x torch's
        return [top if wanted else None for top, wanted in zip(tops, plain, strict=True)]

    def _advance(self, sequence: Sequence, row: int, raw: torch.Tensor, top: int | None) -> bool:
        """Sample the next token of ``sequence`` from its logits (``top``: the token already
        chosen, see ``_top_tokens``); True when it is finished."""
        request = sequence.request
        context = sequence.context
        if not sequence.first_token_at:
            sequence.first_token_at = time.perf_counter()
        position = len(context.token_ids)
        if top is not None:
            token = top
        else:
            context.banned_here = frozenset(sequence.banned_at.get(position, ()))
            logits = raw.clone()
            if sequence.matcher is not None:
                logits = self._apply_grammar(sequence, logits)
            logits = apply_transforms(logits, context)
            token = choose_token(logits, context)
        record = None
        if request.logprobs is not None:
            record = _logprob_record(raw, token, request.logprobs, self.piece)
        context.token_ids.append(token)
        if sequence.matcher is not None:
            sequence.matcher.consume_token(token)

        if token in request.stop_token_ids:
            return self._finish(sequence, "stop", token, self._tail(sequence))
        sequence.held_records.append((token, record))
        released, match = sequence.gate.feed(sequence.decoder.push([token]))
        if isinstance(match, BannedMatch):
            self._backtrack(sequence, row, match.tokens_back, position)
            return False
        if isinstance(match, StopMatch):
            return self._finish(sequence, "stop", match.stop_string, match.text)
        if not sequence.gate.pending:
            self._release(sequence, released)
        elif released:
            sequence.emit(GenerationChunk(text=released))
        if sequence.generated >= request.max_new_tokens:
            return self._finish(sequence, "length", None, self._tail(sequence))
        if sequence.matcher is not None and sequence.matcher.is_stopped():
            return self._finish(sequence, "stop", None, self._tail(sequence))
        self._feed_next(sequence, token)
        return False

    def _feed_next(self, sequence: Sequence, token: int) -> None:
        """``token`` goes in next for ``sequence`` (and for its negative prompt's row)."""
        for member in sequence.members:
            member.pending_token = token

    def _apply_grammar(self, sequence: Sequence, logits: torch.Tensor) -> torch.Tensor:
        allowed = allowed_tokens(sequence.matcher, logits.shape[-1])
        return logits.masked_fill(~allowed, float("-inf"))

    def _backtrack(self, sequence: Sequence, row: int, tokens_back: int, position: int) -> None:
        """Drop the tokens that formed a banned string and ban the first of them there."""
        context = sequence.context
        restart = len(context.token_ids) - tokens_back
        for later in [p for p in sequence.banned_at if p > restart]:
            del sequence.banned_at[later]  # bans made for text that is now gone
        sequence.banned_at.setdefault(restart, set()).add(context.token_ids[restart])
        del context.token_ids[restart:]
        del sequence.held_records[len(sequence.held_records) - tokens_back :]
        sequence.decoder.rewind(tokens_back)
        if sequence.matcher is not None:
            sequence.matcher.rollback(tokens_back)
        # The cache holds every token but the one just sampled; re-feed the new last token.
        self._rewind(row, tokens_back)
        if sequence.negative is not None:  # it holds the same tokens after its own prompt
            self._rewind(self.active.index(sequence.negative), tokens_back)
        self._feed_next(sequence, context.token_ids[-1])

    def _rewind(self, row: int, tokens: int) -> None:
        """Forget the last ``tokens`` cached tokens of ``row``."""
        self.batch.rewind(row, tokens)

    def _tail(self, sequence: Sequence) -> str:
        return sequence.gate.flush() + sequence.decoder.flush()

    def _held_chunk(self, sequence: Sequence, text: str) -> GenerationChunk:
        """A chunk with ``text`` and every token held back so far (their logprobs, if asked)."""
        records, sequence.held_records = sequence.held_records, []
        prompt_logprobs, sequence.prompt_logprobs = sequence.prompt_logprobs, None
        logprobs = None
        if sequence.request.logprobs is not None:
            logprobs = [record for _, record in records if record is not None]
        return GenerationChunk(
            text=text,
            token_ids=[token for token, _ in records],
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
        )

    def _release(self, sequence: Sequence, text: str) -> None:
        if text or sequence.held_records:
            sequence.emit(self._held_chunk(sequence, text))

    def _finish(
        self, sequence: Sequence, reason: str, stop_reason: str | int | None, text: str = ""
    ) -> bool:
        now = time.perf_counter()
        chunk = self._held_chunk(sequence, text)
        chunk.finish_reason = "length" if reason == "length" else "stop"
        chunk.stop_reason = stop_reason
        chunk.stats = GenerationStats(
            prompt_tokens=len(sequence.request.prompt_ids),
            completion_tokens=sequence.generated,
            cached_tokens=sequence.cached_tokens,
            queue_time=sequence.prefill_started - sequence.submitted_at,
            prefill_time=sequence.first_token_at - sequence.prefill_started,
            generate_time=now - sequence.first_token_at,
        )
        sequence.finished = True
        sequence.emit(chunk)
        return True


def emitter(loop: asyncio.AbstractEventLoop, target: asyncio.Queue[Any]) -> Emit:
    """An :data:`Emit` that hands items to ``target`` on ``loop`` from another thread."""

    def emit(item: GenerationChunk | BaseException) -> None:
        put_threadsafe(loop, target, item)

    return emit
