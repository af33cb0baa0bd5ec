"""Serval against `transformers serve`, side by side in one run, on the default model.

    .venv/bin/python bench/vs_transformers_serve.py [--tokens 64] [--streams 8] [--rounds 3]

Both servers are started here on two ports with the same model folder: Serval with its defaults,
`transformers serve` with `--continuous-batching` in bf16 on the CPU (its best setting there),
from the same transformers install. Each figure is measured on one server while the other idles,
alternating between them every round, and reported as the median of the rounds:

- single-stream tokens/s and time to first token (greedy chat, streamed);
- aggregate tokens/s and TTFT p50 of N concurrent streams;
- Serval's own overhead: tokens/s of one stream through HTTP vs the engine called in-process
  on the same model, as a ratio.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.clients import chat_body, concurrent_streams  # noqa: E402
from bench.engine_throughput import MODEL, stream_arguments  # noqa: E402
from tests.support.server import API_KEY, ServerProcess, free_port  # noqa: E402


class TransformersServe:
    """`transformers serve` from this venv, preloading the model."""

    def __init__(self, dtype: str = "bfloat16") -> None:
        self.dtype = dtype
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkdtemp(prefix="transformers-serve-")) / "serve.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> TransformersServe:
        command = [
            str(Path(sys.executable).parent / "transformers"),
            "serve",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--continuous-batching",
            "--dtype", self.dtype,
            "--device", "cpu",
            str(MODEL),
        ]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text()[-2000:]
                raise RuntimeError(
                    f"transformers serve exited ({self.process.returncode}):\n{tail}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"transformers serve did not start in 180 s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)


STORIES = itertools.count(1)


async def measure(url: str, model: str, headers: dict, tokens: int, streams: int) -> dict:
    """One stream, then ``streams`` at once that all send one chat; each of the two a new
    conversation (nothing of it is in a server's cache yet but the system prompt)."""
    single = await concurrent_streams(url, chat_body(model, tokens, next(STORIES)), headers, 1)
    many_body = chat_body(model, tokens, next(STORIES))
    many = await concurrent_streams(url, many_body, headers, streams)
    errors = [s.error for s in single.streams + many.streams if s.error]
    if errors:
        raise RuntimeError(f"{url}: {errors[0]}")
    return {
        "single_tps": single.tokens_per_second,
        "single_ttft": single.streams[0].ttft,
        "many_tps": many.tokens_per_second,
        "many_ttft_p50": many.ttft_p50,
    }


class InProcess:
    """The same engine and chat, called in this process without HTTP."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.engine: Any = None
        self.ids: list[int] = []

    async def load(self) -> None:
        from backends.base import LoadOptions
        from backends.transformers.engine import TransformersEngine
        from common.chat.prompt import ChatPrompt, add_bos_for, render_prompt
        from common.chat.templates import find_model_template

        self.engine = TransformersEngine(LoadOptions(path=MODEL, name=MODEL.name))
        async for _ in self.engine.load():
            pass
        template = find_model_template(MODEL, None)
        assert template is not None
        messages = chat_body(MODEL.name, self.tokens)["messages"]
        special = self.engine.special_tokens
        prompt = await render_prompt(template, ChatPrompt(messages=messages), special, 5)
        self.ids = self.engine.encode(prompt, add_bos=add_bos_for(prompt, special))

    async def tokens_per_second(self) -> float:
        from backends.sampling import SamplingParams
        from common.config import LimitsConfig
        from common.generation import build_request

        params = SamplingParams(temperature=0, max_tokens=self.tokens)
        request = build_request(self.engine, "bench", self.ids, params, LimitsConfig())
        started = time.perf_counter()
        count = 0
        async for chunk in self.engine.generate(request):
            count += len(chunk.token_ids) + (1 if chunk.finish_reason == "stop" else 0)
        return count / (time.perf_counter() - started)


def table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = [
        "| figure | Serval | transformers serve | Serval vs peer (>1: Serval better) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


async def main() -> None:
    args = stream_arguments(__doc__)

    in_process = InProcess(args.tokens)
    await in_process.load()
    engine_tps: list[float] = []
    config = {
        "model": {
            "model_dir": str(ROOT / "models"),
            "model_name": MODEL.name,
            "backend": "transformers",
        },
        "embeddings": {"embedding_model_name": None},
    }
    serval = ServerProcess(Path(tempfile.mkdtemp(prefix="serval-bench-")), config).start()
    peer = TransformersServe().start()
    serval_headers = {"Authorization": f"Bearer {API_KEY}"}
    results: dict[str, list[dict]] = {"serval": [], "peer": []}
    try:
        for url, model, headers in ((serval.url, "x", serval_headers), (peer.url, str(MODEL), {})):
            await measure(url, model, headers, 8, 2)  # warm-up
        await in_process.tokens_per_second()  # warm-up
        for _ in range(args.rounds):
            engine_tps.append(await in_process.tokens_per_second())
            results["serval"].append(
                await measure(serval.url, "x", serval_headers, args.tokens, args.streams)
            )
            results["peer"].append(
                await measure(peer.url, str(MODEL), {}, args.tokens, args.streams)
            )
    finally:
        serval.stop()
        peer.stop()

    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in results[side])

    rows = []
    for key, label, unit, higher_is_better in (
        ("single_tps", "single stream", "tok/s", True),
        ("single_ttft", "single stream TTFT", "ms", False),
        ("many_tps", f"{args.streams} concurrent streams", "tok/s", True),
        ("many_ttft_p50", f"{args.streams} streams TTFT p50", "ms", False),
    ):
        ours, theirs = median("serval", key), median("peer", key)
        scale = 1000 if unit == "ms" else 1
        ratio = ours / theirs if higher_is_better else theirs / ours
        rows.append(
            (
                label,
                f"{ours * scale:.1f} {unit}",
                f"{theirs * scale:.1f} {unit}",
                f"{ratio:.2f}x",
            )
        )
    http_tps = median("serval", "single_tps")
    overhead = statistics.median(
        r["single_tps"] / tps for r, tps in zip(results["serval"], engine_tps, strict=True)
    )
    print(f"model {MODEL.name}, {args.tokens} tokens per stream, median of {args.rounds} rounds")
    print(table(rows))
    print()
    print(
        f"Serval overhead: {http_tps:.1f} tok/s through HTTP streaming vs "
        f"{statistics.median(engine_tps):.1f} tok/s in-process, measured in turn each round: "
        f"ratio {overhead:.3f} (median of the rounds' ratios)"
    )


if __name__ == "__main__":
    asyncio.run(main())
