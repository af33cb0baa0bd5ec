"""The transformers engine on a tiny random model: batching, stops, cancellation, limits."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from backends.base import GenerationChunk, GenerationRequest, LoadOptions
from backends.sampling import SamplingParams
from backends.transformers.batch import BatchScheduler, Sequence
from backends.transformers.engine import TransformersEngine
from common.config import LimitsConfig
from common.errors import ContextLengthError
from common.generation import Completion, build_request, collect

GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def engine(tiny_models: Path) -> Iterator[TransformersEngine]:
    loop = asyncio.new_event_loop()
    engine = TransformersEngine(
        LoadOptions(path=tiny_models / "tiny-a", name="tiny-a", dtype="float32")
    )

    async def load() -> list:
        return [event async for event in engine.load()]

    events = loop.run_until_complete(load())
    assert events[-1].status == "finished"
    assert [e.module for e in events] == sorted(e.module for e in events)
    engine._loop = loop  # type: ignore[attr-defined]
    yield engine
    loop.run_until_complete(engine.unload())
    loop.close()


def run(engine: TransformersEngine, coroutine):
    return engine._loop.run_until_complete(coroutine)  # type: ignore[attr-defined]


def job(
    engine: TransformersEngine, prompt: str, params: SamplingParams = GREEDY, **kw
) -> GenerationRequest:
    params = SamplingParams(**{**params.__dict__, **kw})
    return build_request(engine, "t", engine.encode(prompt), params, LimitsConfig())


def scheduler_for(engine: TransformersEngine, **settings: Any) -> BatchScheduler:
    """A scheduler of its own on ``engine``'s model (``settings``: batch size, chunk, share)."""
    settings.setdefault("chunk_size", engine.prefill_chunk)
    return BatchScheduler(
        model=engine.model,
        decode=engine.decode,
        piece=engine.token_piece,
        device=engine.device,
        **settings,
    )


def test_concurrent_jobs_give_the_same_text_as_one_by_one(engine: TransformersEngine) -> None:
    prompts = ["The import statement", "A class", "Exceptions are raised when", "x"]
    alone = [
        run(engine, collect(engine, job(engine, p, max_tokens=12, min_tokens=12))) for p in prompts
    ]

    async def together() -> list[Completion]:
        return await asyncio.gather(
            *(collect(engine, job(engine, p, max_tokens=12, min_tokens=12)) for p in prompts)
        )

    batched = run(engine, together())
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
    assert all(c.finish_reason == "length" and len(c.token_ids) == 12 for c in batched)


def test_stop_string_across_token_boundary(engine: TransformersEngine) -> None:
    full = run(
        engine, collect(engine, job(engine, "The import statement", max_tokens=16, min_tokens=16))
    )
    pieces = [engine.token_piece(t) for t in full.token_ids]
    assert len(pieces) > 6
    # A stop string made of the end of one token and the start of the next.
    boundary = sum(len(p) for p in pieces[:4])
    stop = full.text[boundary - 1 : boundary + 1]
    assert len(stop) == 2
    stopped = run(
        engine,
        collect(
            engine, job(engine, "The import statement", max_tokens=16, min_tokens=16, stop=(stop,))
        ),
    )
    assert stopped.finish_reason == "stop" and stopped.stop_reason == stop
    assert stopped.text == full.text[: full.text.index(stop)]


def test_eos_from_generation_config_stops(engine: TransformersEngine, tiny_models: Path) -> None:
    config = json.loads((tiny_models / "tiny-a" / "generation_config.json").read_text())
    assert config["eos_token_id"] == 2
    forced = job(engine, "Hello", max_tokens=10, logit_bias=((2, 100.0),))
    result = run(engine, collect(engine, forced))
    assert result.finish_reason == "stop" and result.stop_reason == 2
    assert result.token_ids == []


def test_cancelling_the_consumer_stops_the_job(engine: TransformersEngine) -> None:
    async def scenario() -> int:
        stream = engine.generate(job(engine, "Hello", max_tokens=400, min_tokens=400))
        for _ in range(3):
            await stream.__anext__()
        await stream.aclose()
        for _ in range(50):
            if engine.active_jobs == 0 and engine.queued_jobs == 0:
                break
            await asyncio.sleep(0.01)
        return engine.active_jobs + engine.queued_jobs

    assert run(engine, scenario()) == 0


def test_prompt_over_the_context_is_refused(engine: TransformersEngine) -> None:
    with pytest.raises(ContextLengthError):
        build_request(engine, "t", [5] * 600, GREEDY, LimitsConfig())
    request = build_request(engine, "t", [5] * 500, GREEDY, LimitsConfig())
    assert request.max_new_tokens == 12  # max_tokens is clamped to what is left of the context


def test_a_running_stream_gets_tokens_while_requests_keep_joining(
    engine: TransformersEngine,
) -> None:
    """A new one-token request arrives at every step (submitted as the previous one finishes,
    from the compute thread), the way a busy server sees them. The running stream must still
    get a token at least every other step, not wait until the arrivals stop."""
    scheduler = engine.scheduler
    assert scheduler is not None
    eos = frozenset(engine.special_tokens.eos_ids)
    joiners = 12
    events: list[str] = []  # "S": a token of the running stream; "J": a request that joined
    done = threading.Event()

    def join_next() -> None:
        scheduler.submit(job(engine, "x", max_tokens=1), joiner_emit, eos)

    def joiner_emit(item: GenerationChunk | BaseException) -> None:
        if isinstance(item, BaseException) or item.finish_reason is not None:
            events.append("J")
            if events.count("J") < joiners:
                join_next()
            else:
                done.set()

    def stream_emit(item: GenerationChunk | BaseException) -> None:
        if isinstance(item, GenerationChunk) and item.token_ids:
            if "S" not in events:
                join_next()  # the stream runs: requests start arriving
            events.append("S")

    running = scheduler.submit(
        job(engine, "Hello", max_tokens=400, min_tokens=400), stream_emit, eos
    )
    try:
        assert done.wait(timeout=120)
    finally:
        scheduler.cancel(running)
    during = events[events.index("J") : len(events) - events[::-1].index("J")]
    assert during.count("J") == joiners
    assert during.count("S") >= joiners - 2, "".join(during)


def test_owners_take_turns_for_the_batch_and_keep_to_their_share(
    engine: TransformersEngine,
) -> None:
    """Four rows, a share of one half: owner a's six jobs (one request with n=6) hold two rows
    and wait for the rest, so owner b's job, submitted after them, joins at once."""
    scheduler = scheduler_for(engine, max_batch_size=4, owner_share=0.5)
    eos = frozenset(engine.special_tokens.eos_ids)
    joined: list[str] = []  # the owner of each job, as its first token comes
    done = threading.Event()

    def emit_for(name: str) -> Callable[[GenerationChunk | BaseException], None]:
        first = [True]

        def emit(item: GenerationChunk | BaseException) -> None:
            if first[0]:
                first[0] = False
                joined.append(name)
            if name == "b" and not isinstance(item, BaseException) and item.finish_reason:
                done.set()

        return emit

    def submit(owner: str, **kw: int) -> Sequence:
        request = replace(job(engine, "Hello", **kw), owner=owner)
        return scheduler.submit(request, emit_for(owner), eos)

    flood = [submit("a", max_tokens=200, min_tokens=200) for _ in range(6)]
    submit("b", max_tokens=2, min_tokens=2)
    try:
        assert done.wait(timeout=120)
        assert joined[:3].count("a") == 2 and "b" in joined[:3], joined
    finally:
        for sequence in flood:
            scheduler.cancel(sequence)
        scheduler.stop()


# ----- classifier-free guidance: a hidden row for the negative prompt ----------------------------


def guided(
    engine: TransformersEngine, prompt: str, negative: str, scale: float, **kw
) -> GenerationRequest:
    """A CFG job, its negative prompt tokenized as request planning does (common/jobs.py)."""
    ids = tuple(engine.encode(negative))
    return job(engine, prompt, cfg_scale=scale, negative_prompt_ids=ids, **kw)


def tokens_of(engine: TransformersEngine, *requests: GenerationRequest) -> list[list[int]]:
    async def together() -> list[Completion]:
        return await asyncio.gather(*(collect(engine, request) for request in requests))

    return [completion.token_ids for completion in run(engine, together())]


@pytest.mark.parametrize("extra", [{}, {"banned_strings": ("e",)}], ids=["plain", "backtracking"])
def test_a_negative_prompt_equal_to_the_prompt_changes_nothing(
    engine: TransformersEngine, extra: dict
) -> None:
    """neg + s * (pos - neg) is pos when both rows read the same text: only a companion row fed
    exactly the tokens its sequence samples (and rewound with it) keeps the greedy text."""
    prompt = "The import statement"
    plain = job(engine, prompt, max_tokens=12, min_tokens=12, **extra)
    same = guided(engine, prompt, prompt, 4.0, max_tokens=12, min_tokens=12, **extra)
    (alone,) = tokens_of(engine, plain)
    assert tokens_of(engine, same) == [alone]
    assert tokens_of(engine, same, plain, same) == [alone, alone, alone]  # rows stay apart


def test_cfg_steers_greedy_output_reproducibly(engine: TransformersEngine) -> None:
    prompt, negative = "The import statement", "A class"
    (plain,) = tokens_of(engine, job(engine, prompt, max_tokens=12, min_tokens=12))
    first = tokens_of(engine, guided(engine, prompt, negative, 3.0, max_tokens=12, min_tokens=12))
    again = tokens_of(engine, guided(engine, prompt, negative, 3.0, max_tokens=12, min_tokens=12))
    assert first == again and first[0] != plain


def test_a_negative_prompt_prefilled_in_chunks_gives_the_same_text(
    engine: TransformersEngine,
) -> None:
    """A negative prompt longer than a prefill chunk is fed chunk by chunk before the prompt;
    the text is that of a one-pass prefill. The hidden row counts in no job count and leaves
    with its sequence."""
    scheduler = scheduler_for(engine, max_batch_size=4, chunk_size=3)
    eos = frozenset(engine.special_tokens.eos_ids)
    negative = "Exceptions are raised when the import statement fails"
    request = guided(engine, "A class", negative, 2.5, max_tokens=8, min_tokens=8)
    (one_pass,) = tokens_of(engine, request)
    chunks: list[GenerationChunk] = []
    done = threading.Event()
    counts: list[int] = []

    def emit(item: GenerationChunk | BaseException) -> None:
        assert isinstance(item, GenerationChunk)
        chunks.append(item)
        counts.append(scheduler.running)
        if item.finish_reason is not None:
            done.set()

    try:
        scheduler.submit(request, emit, eos)
        assert done.wait(timeout=120)
    finally:
        scheduler.stop()
    assert [t for chunk in chunks for t in chunk.token_ids] == one_pass
    assert set(counts) == {1} and chunks[-1].stats is not None
    assert chunks[-1].stats.prompt_tokens == len(request.prompt_ids)
    assert scheduler.active == []


def test_cancelling_a_cfg_job_frees_both_rows(engine: TransformersEngine) -> None:
    scheduler = engine.scheduler
    assert scheduler is not None

    async def scenario() -> int:
        request = guided(engine, "Hello", "Goodbye", 2.0, max_tokens=400, min_tokens=400)
        stream = engine.generate(request)
        for _ in range(3):
            await stream.__anext__()
        assert engine.active_jobs == 1 and len(scheduler.active) == 2
        await stream.aclose()
        for _ in range(1000):
            if not scheduler.active and engine.queued_jobs == 0:
                break
            await asyncio.sleep(0.01)
        return len(scheduler.active)

    assert run(engine, scenario()) == 0


def test_cfg_in_a_batch_of_one_row_is_named_and_not_applied(engine: TransformersEngine) -> None:
    params = SamplingParams(cfg_scale=2.0, negative_prompt_ids=(1,))
    assert engine.unsupported_params(params) == []
    scheduler = scheduler_for(engine, max_batch_size=1, chunk_size=8)
    original, engine.scheduler = engine.scheduler, scheduler
    try:
        assert engine.unsupported_params(params) == ["cfg_scale"]
    finally:
        engine.scheduler = original


def test_a_cfg_job_waits_for_two_free_rows_and_then_runs(engine: TransformersEngine) -> None:
    """Two rows, an owner share of one: a CFG job (two rows) behind a running job waits for it
    to leave, and then runs although it holds more than its owner's share; nothing wedges."""
    scheduler = scheduler_for(engine, max_batch_size=2, owner_share=0.5)
    eos = frozenset(engine.special_tokens.eos_ids)
    cfg = guided(engine, "A class", "The import statement", 2.5, max_tokens=6, min_tokens=6)
    (alone,) = tokens_of(engine, cfg)
    results: dict[str, list[int]] = {}
    order: list[str] = []
    done = threading.Event()

    def emit_for(name: str) -> Callable[[GenerationChunk | BaseException], None]:
        tokens: list[int] = []

        def emit(item: GenerationChunk | BaseException) -> None:
            assert isinstance(item, GenerationChunk)
            tokens.extend(item.token_ids)
            if item.finish_reason is not None:
                results[name] = tokens
                order.append(name)
                if len(results) == 3:
                    done.set()

        return emit

    try:
        scheduler.submit(job(engine, "Hello", max_tokens=6, min_tokens=6), emit_for("first"), eos)
        scheduler.submit(cfg, emit_for("cfg"), eos)
        scheduler.submit(job(engine, "x", max_tokens=2, min_tokens=2), emit_for("last"), eos)
        assert done.wait(timeout=120)
    finally:
        scheduler.stop()
    assert order == ["first", "cfg", "last"] and results["cfg"] == alone
    assert scheduler.active == []
