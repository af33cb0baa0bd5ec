"""The CPU engines side by side in one run: Serval on llama.cpp, Serval on transformers,
llama.cpp alone, and `transformers serve` (when installed), on the default model.

    .venv/bin/python bench/cpu_engines.py [--tokens 64] [--streams 8] [--rounds 3] [--no-peer]

- Serval (llamacpp): the GGUF file as shipped (models/SmolLM2-135M-Instruct-GGUF), streamed chat.
- Serval (transformers): the HF conversion of the same file, at the dtype Serval picks here.
- llama.cpp alone: the same GGUF through llama.cpp's C API from this process (the wheel Serval
  uses), greedy argmax, no server and no sampler: the speed of the library itself.
- `transformers serve --continuous-batching --dtype bfloat16` on the HF folder.

Every round measures each one in turn while the others idle; figures are medians of the rounds:
single-stream decode tokens/s and time to first token, and the aggregate tokens/s of N
concurrent streams. The CPU flags are printed with the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.clients import chat_body  # noqa: E402
from bench.engine_throughput import MODEL  # noqa: E402
from bench.vs_transformers_serve import TransformersServe, measure  # noqa: E402
from tests.support.server import API_KEY, ServerProcess  # noqa: E402

GGUF_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct-GGUF"
FIGURES = (
    ("single_tps", "single stream decode", "tok/s"),
    ("single_ttft", "single stream TTFT", "ms"),
    ("many_tps", "{streams} streams aggregate", "tok/s"),
)


class LlamaCppAlone:
    """llama.cpp's C API driven directly: one batch of N sequences, greedy, no server."""

    def __init__(self) -> None:
        from backends.llamacpp.model import LlamaModel

        self.file = next(GGUF_MODEL.glob("*.gguf"))
        self.llama = LlamaModel(self.file, context=8192, sequences=16, batch_tokens=512)
        self.prompt: list[int] = []

    def set_prompt(self, text: str) -> None:
        self.prompt = self.llama.tokenize(text, parse_special=True)

    def run(self, streams: int, tokens: int) -> dict[str, float]:
        from backends.llamacpp.model import Entry

        llama = self.llama
        llama.clear()
        started = time.perf_counter()
        entries = [
            Entry(token, position, slot, position == len(self.prompt) - 1)
            for slot in range(streams)
            for position, token in enumerate(self.prompt)
        ]
        logits = llama.decode(entries)
        first = time.perf_counter() - started
        for step in range(tokens - 1):
            nexts = logits.argmax(dim=-1).tolist()
            position = len(self.prompt) + step
            logits = llama.decode(
                [Entry(token, position, slot, True) for slot, token in enumerate(nexts)]
            )
        # Tokens over the whole time, first token included: what the HTTP figures measure.
        rate = streams * tokens / (time.perf_counter() - started)
        return {"single_tps": rate, "single_ttft": first, "many_tps": rate}


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("model name")), "unknown CPU")  # fmt: skip
    flags = sorted({word for word in text.split() if word.startswith(("avx", "amx"))})
    return f"{model}; {len(os.sched_getaffinity(0))} cores; {' '.join(flags)}"


async def chat_prompt_text() -> str:
    """The chat of the benchmark body rendered by the GGUF's own template."""
    from backends.base import SpecialTokens
    from common.chat.prompt import ChatPrompt, render_prompt
    from common.chat.templates import find_model_template

    template = find_model_template(GGUF_MODEL, None)
    assert template is not None

    special = SpecialTokens(1, (2,), 2, "<|im_start|>", "<|im_end|>", "<|im_end|>", None, False)
    messages = chat_body("x", 1)["messages"]
    return await render_prompt(template, ChatPrompt(messages=messages), special, 5)


def serval(model: str) -> ServerProcess:
    config = {
        "model": {"model_dir": str(ROOT / "models"), "model_name": model},
        "embeddings": {"embedding_model_name": None},
    }
    return ServerProcess(Path(tempfile.mkdtemp(prefix="serval-bench-")), config).start()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-peer", action="store_true", help="skip `transformers serve`")
    args = parser.parse_args()

    alone = LlamaCppAlone()
    alone.set_prompt(await chat_prompt_text())
    headers = {"Authorization": f"Bearer {API_KEY}"}
    servers: dict[str, Any] = {
        "Serval (llamacpp)": serval(GGUF_MODEL.name),
        "Serval (transformers)": serval(MODEL.name),
    }
    peer = shutil.which("transformers", path=str(Path(sys.executable).parent))
    if peer and not args.no_peer:
        servers["transformers serve"] = TransformersServe().start()
    results: dict[str, list[dict[str, float]]] = {n: [] for n in ["llama.cpp alone", *servers]}
    names_first = "llama.cpp alone"
    try:
        alone.run(1, 8)
        for name, server in servers.items():  # warm-up
            auth = headers if name.startswith("Serval") else {}
            await measure(server.url, str(MODEL) if not auth else "x", auth, 8, 2)
        for _ in range(args.rounds):
            single = alone.run(1, args.tokens)
            many = alone.run(args.streams, args.tokens)
            results["llama.cpp alone"].append({**single, "many_tps": many["many_tps"]})
            for name, server in servers.items():
                auth = headers if name.startswith("Serval") else {}
                model = "x" if auth else str(MODEL)
                results[name].append(
                    await measure(server.url, model, auth, args.tokens, args.streams)
                )
            round_figures = {name: runs[-1] for name, runs in results.items()}
            print(f"round {len(results[names_first])}: {round_figures}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
        alone.llama.close()

    names = list(results)
    print(f"CPU: {cpu_flags()}")
    print(f"{args.tokens} tokens per stream, greedy, median of {args.rounds} rounds")
    print("| figure | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key, label, unit in FIGURES:
        scale = 1000 if unit == "ms" else 1
        medians = [statistics.median(r[key] for r in results[n]) * scale for n in names]
        cells = [f"{value:.1f} {unit}" for value in medians]
        print(f"| {label.format(streams=args.streams)} | " + " | ".join(cells) + " |")
    ours = results["Serval (llamacpp)"]
    print()
    for other in [name for name in names if name != "Serval (llamacpp)"]:
        ratios = []
        for key, label, unit in FIGURES:
            pairs = zip(ours, results[other], strict=True)
            values = [a[key] / b[key] if unit != "ms" else b[key] / a[key] for a, b in pairs]
            ratios.append(f"{label.format(streams=args.streams)} {statistics.median(values):.2f}x")
        print(f"Serval (llamacpp) vs {other} (>1: better): " + ", ".join(ratios))
    alone_tps = statistics.median(r["single_tps"] for r in ours)
    batched_tps = statistics.median(r["many_tps"] for r in ours)
    print(
        f"Serval (llamacpp) {args.streams} streams / its single stream: "
        f"{batched_tps / alone_tps:.2f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
