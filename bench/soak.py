"""Soak test: many streaming clients against one Serval for a while, then a report.

    .venv/bin/python bench/soak.py [--clients 64] [--seconds 60] [--tokens 32]

Starts Serval with the default model, runs N clients that each stream chat completions back to
back for the given time, and reports: requests, errors (must be 0), generated tokens/s, TTFT
p50/p99, the server's peak RSS, and its open file descriptors before and after (no leak).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.clients import LoadResult, chat_body, stream_chat  # noqa: E402
from bench.engine_throughput import MODEL  # noqa: E402
from tests.support.server import API_KEY, ServerProcess  # noqa: E402


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def client_loop(
    client: httpx.AsyncClient, url: str, body: dict, deadline: float, result: LoadResult
) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    while time.perf_counter() < deadline:
        result.streams.append(await stream_chat(client, url, body, headers))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()

    config = {
        "model": {"model_dir": str(ROOT / "models"), "model_name": MODEL.name},
        "embeddings": {"embedding_model_name": None},
    }
    server = ServerProcess(Path(tempfile.mkdtemp(prefix="serval-soak-")), config).start()
    assert server.process is not None
    pid = server.process.pid
    try:
        async with httpx.AsyncClient(timeout=600) as warm:
            await stream_chat(
                warm, server.url, chat_body("x", 4), {"Authorization": f"Bearer {API_KEY}"}
            )
        await asyncio.sleep(1)
        fds_before = open_fds(pid)
        result = LoadResult()
        limits = httpx.Limits(max_connections=args.clients + 8)
        started = time.perf_counter()
        async with httpx.AsyncClient(timeout=600, limits=limits) as client:
            deadline = started + args.seconds
            body = chat_body("x", args.tokens)
            await asyncio.gather(
                *(
                    client_loop(client, server.url, body, deadline, result)
                    for _ in range(args.clients)
                )
            )
        result.seconds = time.perf_counter() - started
        await asyncio.sleep(2)
        fds_after = open_fds(pid)
        health = httpx.get(f"{server.url}/health").status_code
        rss = peak_rss_mb(pid)
    finally:
        server.stop()

    errors = [s.error for s in result.streams if s.error]
    print(f"model {MODEL.name}: {args.clients} streaming clients for {args.seconds:.0f} s")
    print("| figure | value |")
    print("|---|---|")
    print(f"| requests | {len(result.streams)} |")
    print(f"| errors | {len(errors)} |")
    print(f"| generated tokens/s | {result.tokens_per_second:.1f} |")
    print(f"| TTFT p50 | {result.ttft_percentile(0.5) * 1000:.0f} ms |")
    print(f"| TTFT p99 | {result.ttft_percentile(0.99) * 1000:.0f} ms |")
    print(f"| server peak RSS | {rss:.0f} MB |")
    print(f"| open fds before / after | {fds_before} / {fds_after} |")
    print(f"| /health after | {health} |")
    if errors:
        print(f"first error: {errors[0]}")
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main())
