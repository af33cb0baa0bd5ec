"""CPU engine throughput: single stream and 8 concurrent streams, against transformers' generate.

Runs in one process on the default model, so every figure comes from the same machine state:

    .venv/bin/python bench/engine_throughput.py [--tokens 64] [--streams 8] [--rounds 3]

Prints single-stream tokens/s and TTFT of the Serval engine, the aggregate tokens/s and TTFT p50 of
N concurrent streams, and transformers' own greedy ``generate`` loop on the same weights, with the
ratios the targets are stated in (N streams vs single; single vs generate).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from backends import compute  # noqa: E402
from backends.base import LoadOptions  # noqa: E402
from backends.sampling import SamplingParams  # noqa: E402
from backends.transformers.engine import TransformersEngine  # noqa: E402
from common.config import LimitsConfig  # noqa: E402
from common.generation import build_request  # noqa: E402

MODEL = ROOT / "models" / "SmolLM2-135M-Instruct"
PROMPT = "Once upon a time, in a small village by the sea,"


async def stream_once(engine: TransformersEngine, tokens: int) -> tuple[int, float, float]:
    """(tokens, seconds, time to first token) of one greedy stream of exactly ``tokens``."""
    ids = engine.encode(PROMPT)
    params = SamplingParams(temperature=0, min_tokens=tokens, max_tokens=tokens)
    request = build_request(engine, "bench", ids, params, LimitsConfig())
    started = time.perf_counter()
    first = 0.0
    count = 0
    async for chunk in engine.generate(request):
        if chunk.token_ids and not first:
            first = time.perf_counter() - started
        count += len(chunk.token_ids)
    return count, time.perf_counter() - started, first


def generate_loop(engine: TransformersEngine, tokens: int) -> float:
    """Tokens/s of transformers' own greedy generate on the engine's model."""
    ids = torch.tensor([engine.encode(PROMPT)])
    with torch.inference_mode():
        started = time.perf_counter()
        engine.model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        return tokens / (time.perf_counter() - started)


def stream_arguments(doc: str) -> argparse.Namespace:
    """The command line of a streaming benchmark (``doc``: its module docstring): tokens per
    stream, concurrent streams and rounds."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


async def main() -> None:
    args = stream_arguments(__doc__)

    engine = TransformersEngine(LoadOptions(path=MODEL, name=MODEL.name))
    async for _ in engine.load():
        pass
    await stream_once(engine, 8)  # warm-up
    single, ttft, concurrent, ttft_p50, baseline = [], [], [], [], []
    for _ in range(args.rounds):
        count, seconds, first = await stream_once(engine, args.tokens)
        single.append(count / seconds)
        ttft.append(first)
        started = time.perf_counter()
        results = await asyncio.gather(
            *(stream_once(engine, args.tokens) for _ in range(args.streams))
        )
        elapsed = time.perf_counter() - started
        concurrent.append(sum(r[0] for r in results) / elapsed)
        ttft_p50.append(statistics.median(r[2] for r in results))
        baseline.append(await compute.run(generate_loop, engine, args.tokens))
    await engine.unload()

    best = statistics.median
    print(f"model: {MODEL.name}, {args.tokens} tokens per stream, median of {args.rounds} rounds")
    print(f"single stream:          {best(single):7.1f} tok/s   TTFT {best(ttft) * 1000:6.0f} ms")
    print(
        f"{args.streams} concurrent streams:    {best(concurrent):7.1f} tok/s   "
        f"TTFT p50 {best(ttft_p50) * 1000:6.0f} ms"
    )
    print(f"transformers generate:  {best(baseline):7.1f} tok/s")
    print(f"ratio {args.streams} streams / single:   {best(concurrent) / best(single):.2f}x")
    print(f"ratio single / generate:     {best(single) / best(baseline):.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
