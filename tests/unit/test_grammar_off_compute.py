"""One request's grammar must not slow everyone (issue 15, finding 5): matchers are built (first
mask included) on the grammar threads before the job joins the batch, a grammar that cannot
be served fails its own request with a 400, and a disconnect while it builds frees everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace

from backends.transformers.engine import TransformersEngine
from common.errors import GrammarError
from common.generation import Completion, collect
from common.grammar import build_grammar
from tests.unit.test_transformers_engine import engine, job, run  # noqa: F401 - the fixture

# Valid, but its first masks take llguidance seconds of lexer work before it gives up.
COSTLY = {"type": "string", "pattern": "^a{1000000}$"}
PROMPT = "The import statement"


def test_costly_grammars_do_not_stall_other_requests(engine: TransformersEngine) -> None:  # noqa: F811
    grammar = build_grammar(json_schema=COSTLY)

    async def attacked() -> tuple[list[float], list[BaseException | object]]:
        gaps: list[float] = []
        hostile: list[asyncio.Future[Completion]] = []
        last = 0.0
        async for _ in engine.generate(job(engine, PROMPT, max_tokens=24, min_tokens=24)):
            now = time.perf_counter()
            if not hostile:  # the plain stream runs: now four costly grammars arrive
                hostile = [
                    asyncio.ensure_future(
                        collect(engine, replace(job(engine, PROMPT, max_tokens=8), grammar=grammar))
                    )
                    for _ in range(4)
                ]
            else:
                gaps.append(now - last)
            last = now
        return gaps, await asyncio.gather(*hostile, return_exceptions=True)

    gaps, outcomes = run(engine, attacked())
    # Each costly grammar ended its own request: a 400, or a stop once llguidance gave up.
    for outcome in outcomes:
        if isinstance(outcome, GrammarError):
            assert outcome.status_code == 400
        else:
            assert isinstance(outcome, Completion) and len(outcome.token_ids) < 8, outcome
    # Built on the compute thread, one costly matcher stalled every stream for one step of
    # 2-3 s (measured before the fix on 2 busy cores); now no step waits for a grammar (a
    # step of this tiny model takes well under 0.1 s, even beside the grammar work).
    print(f"longest pause between the plain stream's tokens: {max(gaps):.2f} s")
    assert max(gaps) < 2.0, gaps


def test_a_disconnect_while_the_matcher_builds_frees_the_request(
    engine: TransformersEngine,  # noqa: F811
) -> None:
    grammar = build_grammar(json_schema=COSTLY)

    async def disconnect() -> float:
        task = asyncio.ensure_future(
            collect(engine, replace(job(engine, PROMPT, max_tokens=8), grammar=grammar))
        )
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return time.perf_counter() - started

    assert run(engine, disconnect()) < 0.5
    # On a fast machine the build may end first and the job join the batch: the scheduler
    # then drops it at its next step, on the compute thread.
    deadline = time.monotonic() + 10
    while (engine.active_jobs or engine.queued_jobs) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.active_jobs == 0 and engine.queued_jobs == 0
    done = run(engine, collect(engine, job(engine, PROMPT, max_tokens=4, min_tokens=4)))
    assert len(done.token_ids) == 4
