"""The CPU engines side by side in one run: Serval on llama.cpp, Serval on transformers,
llama.cpp alone, and `transformers serve`, on the default model.

    .venv/bin/python bench/cpu_engines.py [--tokens 64] [--streams 8] [--rounds 3]
        [--no-peer] [--peer-dtype bfloat16] [--avx2-kernels]

A short check that everything runs: ``--rounds 1 --tokens 16``.

``--avx2-kernels`` measures what an AVX2-only CPU runs, on a machine with AVX512: torch's and
oneDNN's kernels are held to AVX2 (``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``)
and Serval's transformers engine runs in fp32, as it picks there (no AVX512-BF16); llama.cpp's
wheel has AVX2 kernels only anyway. The memory and caches stay this machine's.

- Serval (llamacpp): the GGUF file as shipped (models/SmolLM2-135M-Instruct-GGUF), streamed chat.
- Serval (transformers): the HF conversion of the same file, at the dtype Serval picks here.
- llama.cpp alone: the same GGUF through llama.cpp's C API from this process (the wheel Serval
  uses), greedy argmax, no server and no sampler: the speed of the library itself, once with
  each thread count from 1 to the cores this process may use (Serval's choice is printed).
- `transformers serve --continuous-batching --dtype bfloat16` on the HF folder (another dtype
  with ``--peer-dtype``); when it is not installed or does not start, the table says why.

Every round measures each one in turn while the others idle; figures are medians of the rounds:
single-stream decode tokens/s and time to first token, and the aggregate tokens/s of N
concurrent streams (all N send the same chat). Every measurement sends a new chat, so no server
answers it from what an earlier one left in its cache (Serval on llamacpp keeps prompts: only
the template's system prompt is shared). The CPU flags are printed with the table.
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

    def run(self, streams: int, tokens: int, threads: int) -> dict[str, float]:
        from backends.llamacpp.model import Entry

        llama = self.llama
        llama.lib.llama_set_n_threads(llama.context, threads, threads)
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


def alone_name(threads: int) -> str:
    return f"llama.cpp alone ({threads} thread{'s' if threads > 1 else ''})"


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


AVX2_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def serval(model: str, backend: str, dtype: str = "auto") -> ServerProcess:
    config = {
        "model": {
            "model_dir": str(ROOT / "models"),
            "model_name": model,
            "backend": backend,
            "dtype": dtype,
        },
        "embeddings": {"embedding_model_name": None},
    }
    return ServerProcess(Path(tempfile.mkdtemp(prefix="serval-bench-")), config).start()


def start_peer(dtype: str) -> tuple[TransformersServe | None, str]:
    """`transformers serve` started, or None and why not."""
    if not shutil.which("transformers", path=str(Path(sys.executable).parent)):
        return None, "not installed in this venv (pip install 'transformers[serving]')"
    try:
        return TransformersServe(dtype).start(), ""
    except (RuntimeError, TimeoutError) as exc:
        return None, f"did not start: {exc}"


def engine_dtype(server: ServerProcess) -> str:
    """What Serval reports it runs the model in (GET /v1/model)."""
    with server.client() as client:
        parameters = client.get("/v1/model").json().get("parameters") or {}
    return str(parameters.get("dtype") or "?")


def print_table(results: dict[str, list[dict[str, float]]], streams: int) -> None:
    names = list(results)
    print("| figure | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key, label, unit in FIGURES:
        scale = 1000 if unit == "ms" else 1
        medians = [statistics.median(r[key] for r in results[n]) * scale for n in names]
        cells = [f"{value:.1f} {unit}" for value in medians]
        print(f"| {label.format(streams=streams)} | " + " | ".join(cells) + " |")


def print_ratios(results: dict[str, list[dict[str, float]]], streams: int) -> None:
    """Serval on llamacpp against each other contender, round by round, and its batching."""
    ours = results["Serval (llamacpp)"]
    for other in [name for name in results if name != "Serval (llamacpp)"]:
        ratios = []
        for key, label, unit in FIGURES:
            pairs = zip(ours, results[other], strict=True)
            values = [a[key] / b[key] if unit != "ms" else b[key] / a[key] for a, b in pairs]
            ratios.append(f"{label.format(streams=streams)} {statistics.median(values):.2f}x")
        print(f"Serval (llamacpp) vs {other} (>1: better): " + ", ".join(ratios))
    for name in results:
        single = statistics.median(r["single_tps"] for r in results[name])
        batched = statistics.median(r["many_tps"] for r in results[name])
        print(f"{name}: {streams} streams / its single stream {batched / single:.2f}x")


async def main() -> None:
    from backends.llamacpp.model import cpu_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-peer", action="store_true", help="skip `transformers serve`")
    parser.add_argument("--peer-dtype", default="bfloat16", help="`transformers serve --dtype`")
    parser.add_argument(
        "--avx2-kernels", action="store_true", help="torch on AVX2 kernels, Serval in fp32"
    )
    args = parser.parse_args()
    started = time.monotonic()
    if args.avx2_kernels:
        os.environ.update(AVX2_KERNELS)  # the servers started below inherit it

    alone = LlamaCppAlone()
    alone.set_prompt(await chat_prompt_text())
    thread_counts = range(1, len(os.sched_getaffinity(0)) + 1)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    servers: dict[str, Any] = {
        "Serval (llamacpp)": serval(GGUF_MODEL.name, "llamacpp"),
        "Serval (transformers)": serval(
            MODEL.name, "transformers", "float32" if args.avx2_kernels else "auto"
        ),
    }
    dtypes = {name: engine_dtype(server) for name, server in servers.items()}
    peer_note = "left out (--no-peer)"
    if not args.no_peer:
        peer, peer_note = start_peer(args.peer_dtype)
        if peer is not None:
            servers["transformers serve"] = peer
            peer_note = f"--continuous-batching --dtype {args.peer_dtype}"
    results: dict[str, list[dict[str, float]]] = {
        name: [] for name in [*(alone_name(t) for t in thread_counts), *servers]
    }
    try:
        for threads in thread_counts:  # warm-up
            alone.run(1, 8, threads)
        for name, server in servers.items():
            auth = headers if name.startswith("Serval") else {}
            await measure(server.url, str(MODEL) if not auth else "x", auth, 8, 2)
        for round_number in range(1, args.rounds + 1):
            for threads in thread_counts:
                single = alone.run(1, args.tokens, threads)
                many = alone.run(args.streams, args.tokens, threads)
                results[alone_name(threads)].append({**single, "many_tps": many["many_tps"]})
            for name, server in servers.items():
                auth = headers if name.startswith("Serval") else {}
                model = "x" if auth else str(MODEL)
                results[name].append(
                    await measure(server.url, model, auth, args.tokens, args.streams)
                )
            round_figures = {name: runs[-1] for name, runs in results.items()}
            print(f"round {round_number}: {round_figures}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
        alone.llama.close()

    print(f"CPU: {cpu_flags()}")
    if args.avx2_kernels:
        print(f"torch and oneDNN held to AVX2 kernels: {AVX2_KERNELS}")
    print(f"llama.cpp {alone.llama.native.version}: {alone.llama.native.cpu_features}")
    print(
        f"Serval runs llama.cpp with {cpu_threads()} thread(s); Serval (transformers) in "
        f"{dtypes['Serval (transformers)']}; Serval (llamacpp) on {dtypes['Serval (llamacpp)']}"
        f" weights; transformers serve: {peer_note}"
    )
    print(f"{args.tokens} tokens per stream, greedy, median of {args.rounds} rounds")
    print_table(results, args.streams)
    print()
    print_ratios(results, args.streams)
    print(f"whole run: {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
