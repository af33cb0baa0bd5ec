"""What the sampler stack costs the CPU engine: tokens/s with every sampler off vs a heavy stack.

The transformers engine is loaded in-process with the default model and driven through its
real ``generate()`` (continuous batching worker, incremental decoding, stop/banned-string gate):
everything a request goes through except HTTP. HTTP and JSON cost the same for both stacks, so
leaving them out only removes noise from the comparison.

Both stacks sample at temperature 1 with EOS banned, so every run makes exactly ``--tokens``
tokens after the same prompt (about ``--context`` tokens of text). Runs alternate (off, heavy,
heavy, off, ...) so that a machine shared with other work slows both alike, and the ratio is the
median over adjacent pairs. The time spent inside the samplers is measured too, per token: on a
busy machine it gives the steadier estimate of what the stack costs.

    .venv/bin/python bench/samplers.py [--tokens 64] [--rounds 8] [--context 1024] [--batch 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from backends.base import GenerationRequest, LoadOptions  # noqa: E402
from backends.sampling import SamplingParams  # noqa: E402
from backends.transformers import batch  # noqa: E402
from backends.transformers.engine import TransformersEngine  # noqa: E402

MODEL = ROOT / "models" / "SmolLM2-135M-Instruct"
STORY = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk. He trimmed the "
    "wick, polished the great lens and wrote the weather in his log: wind from the west, sea "
    "calm, a fishing boat returning late. In winter the storms came in from the north, and "
    "he kept the lamp burning through the night while the waves broke over the rocks below. "
)
OFF = SamplingParams(temperature=1.0, ban_eos_token=True)
HEAVY = replace(
    OFF,
    dry_multiplier=0.8,
    dry_base=1.75,
    dry_allowed_length=2,
    xtc_probability=0.5,
    xtc_threshold=0.1,
    mirostat_mode=2,
    mirostat_tau=5.0,
    mirostat_eta=0.1,
    repetition_penalty=1.1,
    frequency_penalty=0.2,
    presence_penalty=0.2,
)


class SamplerClock:
    """Wraps the engine's sampler calls to add up the time spent in them."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.tokens = 0

    def wrap(self, function: Callable[..., Any], count: bool) -> Callable[..., Any]:
        def timed(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args)
            finally:
                self.seconds += time.perf_counter() - start
                self.tokens += count

        return timed

    def take(self) -> float:
        """Milliseconds per token since the last call."""
        per_token = 1000 * self.seconds / max(self.tokens, 1)
        self.seconds, self.tokens = 0.0, 0
        return per_token


async def run(engine: TransformersEngine, prompt: list[int], params: SamplingParams, args) -> float:
    """Tokens/s of ``args.batch`` concurrent sequences over the decode phase."""

    async def one(index: int) -> tuple[int, float]:
        request = GenerationRequest(
            request_id=f"bench-{index}",
            prompt_ids=prompt,
            params=replace(params, seed=index),
            max_new_tokens=args.tokens,
            stop_token_ids=frozenset(engine.special_tokens.eos_ids),
        )
        async for chunk in engine.generate(request):
            if chunk.stats is not None:
                return chunk.stats.completion_tokens, chunk.stats.generate_time
        raise RuntimeError("the generation ended without stats")

    results = await asyncio.gather(*(one(i) for i in range(args.batch)))
    tokens = sum(count for count, _ in results)
    seconds = max(elapsed for _, elapsed in results)
    return tokens / seconds


async def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads or torch.get_num_threads())
    engine = TransformersEngine(LoadOptions(path=MODEL, name=MODEL.name, max_batch_size=16))
    async for _ in engine.load():
        pass
    clock = SamplerClock()
    batch.apply_transforms = clock.wrap(batch.apply_transforms, count=False)
    batch.choose_token = clock.wrap(batch.choose_token, count=True)
    text = STORY * (args.context // 60 + 1)
    prompt = engine.encode(text, add_bos=False)[: args.context]
    stacks = {"off": OFF, "heavy": HEAVY}
    speeds: dict[str, list[float]] = {name: [] for name in stacks}
    sampler_ms: dict[str, list[float]] = {name: [] for name in stacks}
    warm_up = argparse.Namespace(**{**vars(args), "tokens": 8})
    await run(engine, prompt, OFF, warm_up)
    await run(engine, prompt, HEAVY, warm_up)  # also builds the vocabulary index for DRY
    clock.take()
    print(
        f"{MODEL.name}, {engine.info().dtype} on {engine.info().device}, "
        f"{torch.get_num_threads()} threads; prompt {len(prompt)} tokens, "
        f"{args.tokens} new tokens x {args.batch} sequence(s), {args.rounds} rounds"
    )
    for round_index in range(args.rounds):
        order = ("off", "heavy") if round_index % 2 == 0 else ("heavy", "off")
        for name in order:
            speeds[name].append(await run(engine, prompt, stacks[name], args))
            sampler_ms[name].append(clock.take())
        print(
            f"  round {round_index + 1}: off {speeds['off'][-1]:6.1f} tok/s, "
            f"heavy {speeds['heavy'][-1]:6.1f} tok/s"
        )
    await engine.unload()
    off, heavy = statistics.median(speeds["off"]), statistics.median(speeds["heavy"])
    paired = statistics.median(h / o for h, o in zip(speeds["heavy"], speeds["off"], strict=True))
    off_ms, heavy_ms = statistics.median(sampler_ms["off"]), statistics.median(sampler_ms["heavy"])
    print(f"samplers off : {off:7.1f} tok/s  ({off_ms:.2f} ms/token in samplers)")
    print(f"heavy stack  : {heavy:7.1f} tok/s  ({heavy_ms:.2f} ms/token in samplers)")
    print(f"heavy / off  : {paired:.3f} (median of paired rounds; cost {100 * (1 - paired):.1f}%)")
    share = (heavy_ms - off_ms) / (1000 / off)  # of the time one token takes, samplers off
    extra = heavy_ms - off_ms
    print(f"sampler time : the heavy stack adds {extra:.2f} ms/token = {100 * share:.1f}%")
    print("target       : the heavy stack costs under 15%")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per run")
    parser.add_argument("--rounds", type=int, default=8, help="runs of each stack")
    parser.add_argument("--context", type=int, default=1024, help="prompt length in tokens")
    parser.add_argument("--batch", type=int, default=1, help="concurrent sequences")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
