"""Python parts of scripts/gpu_check.sh: the check model, comparisons, and the throughput run.

    python scripts/gpu_check.py model DIR        build the tiny fp16 model (DIR/tiny) and a LoRA
                                                 for it (DIR/tiny-lora)
    python scripts/gpu_check.py bench DIR ENGINE tokens/s of ENGINE alone and through the HTTP
                                                 server, side by side in one run

The correctness checks are pytest tests (tests/gpu/), which import the helpers below. The
comparison helpers are plain torch and are unit-tested on the CPU.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# Logits of fp16 models computed by different kernels agree to about 1% of their scale.
RELATIVE_TOLERANCE = 1e-2
GREEDY_STEPS = 16
LORA_RANK = 8
LORA_TARGETS = ("q_proj", "v_proj")


# ----- the check model ---------------------------------------------------------------------------


def build_check_model(base: Path) -> Path:
    """A tiny fp16 Llama both ExLlama engines load: projections multiples of 32, head_dim 64.

    Weights are drawn wider than usual (std 0.1) so that greedy choices are rarely near-ties.
    """
    from tests.support.tiny_model import build_tiny_exllama_model

    return build_tiny_exllama_model(
        base / "tiny",
        seed=3,
        hidden_size=256,
        intermediate_size=704,
        layers=4,
        heads=4,
        kv_heads=4,
        max_position_embeddings=2048,
        initializer_range=0.1,
    )


def build_lora(target: Path, model_dir: Path, seed: int = 5) -> Path:
    """A PEFT-format LoRA adapter (rank 8 on q_proj and v_proj) for the check model."""
    from safetensors.torch import save_file

    config = json.loads((model_dir / "config.json").read_text())
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    outputs = {
        "q_proj": config["num_attention_heads"] * head_dim,
        "v_proj": config["num_key_value_heads"] * head_dim,
    }
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for module in LORA_TARGETS:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            a = torch.randn((LORA_RANK, hidden), generator=generator) * 0.1
            b = torch.randn((outputs[module], LORA_RANK), generator=generator) * 0.1
            tensors[f"{prefix}.lora_A.weight"] = a.to(torch.float16)
            tensors[f"{prefix}.lora_B.weight"] = b.to(torch.float16)
    target.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target / "adapter_model.safetensors"))
    adapter = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(model_dir),
        "r": LORA_RANK,
        "lora_alpha": 2 * LORA_RANK,
        "lora_dropout": 0.0,
        "target_modules": list(LORA_TARGETS),
        "fan_in_fan_out": False,
        "bias": "none",
    }
    (target / "adapter_config.json").write_text(json.dumps(adapter, indent=2))
    return target


# ----- comparisons -------------------------------------------------------------------------------


@dataclass
class LogitReport:
    max_difference: float
    tolerance: float
    same_argmax: bool

    @property
    def ok(self) -> bool:
        return self.max_difference <= self.tolerance and self.same_argmax


def compare_logits(ours: torch.Tensor, reference: torch.Tensor) -> LogitReport:
    """Next-token logits of one prompt (the reference's vocabulary; extra columns ignored)."""
    reference = reference.float().cpu()
    ours = ours.float().cpu()[: reference.shape[-1]]
    scale = 1.0 + float(reference.abs().max())
    return LogitReport(
        max_difference=float((ours - reference).abs().max()),
        tolerance=RELATIVE_TOLERANCE * scale,
        same_argmax=int(ours.argmax()) == int(reference.argmax()),
    )


@dataclass
class GreedyReport:
    compared: int
    first_difference: int | None
    near_tie: bool

    @property
    def ok(self) -> bool:
        return self.first_difference is None or self.near_tie


def compare_greedy(
    ours: Sequence[int], reference: Sequence[int], reference_logits: Sequence[torch.Tensor]
) -> GreedyReport:
    """Greedy tokens step by step. A different token passes only where the reference's own
    logits rate it within fp16 tolerance of its choice (a near-tie); both runs then diverge, so
    the comparison stops there."""
    steps = min(len(ours), len(reference))
    for step in range(steps):
        if ours[step] != reference[step]:
            logits = reference_logits[step].float()
            gap = float(logits[reference[step]] - logits[ours[step]])
            tolerance = RELATIVE_TOLERANCE * (1.0 + float(logits.abs().max()))
            return GreedyReport(steps, step, near_tie=gap <= tolerance)
    return GreedyReport(steps, None, near_tie=False)


# ----- reference and engine runs -----------------------------------------------------------------


def reference_model(model_dir: Path, lora_dir: Path | None = None) -> Any:
    """The transformers model in fp16 on the GPU (with the LoRA when given)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float16)
    if lora_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, lora_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval()


@torch.inference_mode()
def reference_greedy(model: Any, prompt: Sequence[int], steps: int) -> tuple[list[int], list]:
    device = next(model.parameters()).device
    ids = list(prompt)
    chosen, logits_seen = [], []
    for _ in range(steps):
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float().cpu()
        token = int(logits.argmax())
        chosen.append(token)
        logits_seen.append(logits)
        ids.append(token)
    return chosen, logits_seen


@torch.inference_mode()
def reference_logits(model: Any, prompt: Sequence[int]) -> torch.Tensor:
    device = next(model.parameters()).device
    return model(input_ids=torch.tensor([list(prompt)], device=device)).logits[0, -1].float().cpu()


@torch.inference_mode()
def engine_logits(engine: Any, prompt: Sequence[int]) -> torch.Tensor:
    """Next-token logits from the engine's own model, one forward pass without a cache."""
    ids = torch.tensor([list(prompt)], dtype=torch.long)
    if engine.backend == "exllamav2":
        logits = engine.model.forward(ids)
    else:
        logits = engine.model.forward(ids, {"attn_mode": "flash_attn_nc"})
    return logits[0, -1].float().cpu()


def load_engine(backend: str, model_dir: Path, **options: Any) -> Any:
    from backends.base import LoadOptions
    from backends.registry import create_engine

    engine = create_engine(backend, LoadOptions(path=model_dir, name=model_dir.name, **options))

    async def drain() -> None:
        async for _ in engine.load():
            pass

    asyncio.run(drain())
    return engine


def greedy_request(engine: Any, prompt: Sequence[int], tokens: int, **kwargs: Any) -> Any:
    from backends.base import GenerationRequest
    from backends.sampling import SamplingParams

    return GenerationRequest(
        request_id=kwargs.pop("request_id", "check"),
        prompt_ids=list(prompt),
        params=SamplingParams(temperature=0, **kwargs),
        max_new_tokens=tokens,
    )


def generate_ids(engine: Any, requests: Sequence[Any]) -> list[list[int]]:
    from common.generation import collect_all

    done = asyncio.run(collect_all(engine, list(requests)))
    return [completion.token_ids for completion in done]


# ----- throughput --------------------------------------------------------------------------------

BENCH_STREAMS = 8
BENCH_TOKENS = 128
BENCH_PROMPT = "Once upon a time"


def bench_engine(engine: Any) -> float:
    prompt = engine.encode(BENCH_PROMPT)
    requests = [
        greedy_request(engine, prompt, BENCH_TOKENS, request_id=f"b{i}", ban_eos_token=True)
        for i in range(BENCH_STREAMS)
    ]
    generate_ids(engine, requests[:1])  # warm-up
    started = time.perf_counter()
    done = generate_ids(engine, requests)
    return sum(len(ids) for ids in done) / (time.perf_counter() - started)


def bench_http(url: str, api_key: str) -> float:
    import httpx

    body = {
        "prompt": BENCH_PROMPT,
        "max_tokens": BENCH_TOKENS,
        "temperature": 0,
        "ban_eos_token": True,
    }
    headers = {"Authorization": f"Bearer {api_key}"}

    async def one(client: httpx.AsyncClient) -> int:
        response = await client.post("/v1/completions", json=body, headers=headers)
        response.raise_for_status()
        return int(response.json()["usage"]["completion_tokens"])

    async def run() -> float:
        async with httpx.AsyncClient(base_url=url, timeout=600) as client:
            await one(client)  # warm-up
            started = time.perf_counter()
            counts = await asyncio.gather(*(one(client) for _ in range(BENCH_STREAMS)))
            return sum(counts) / (time.perf_counter() - started)

    return asyncio.run(run())


def bench(base: Path, backend: str) -> None:
    """Engine alone, then the same load through the real HTTP server; printed side by side."""
    from tests.support.server import API_KEY, ServerProcess

    model_dir = base / "tiny"
    engine = load_engine(backend, model_dir, max_seq_len=2048)
    try:
        alone = bench_engine(engine)
    finally:
        asyncio.run(engine.unload())
    config = {
        "network": {"api_servers": ["OAI"]},
        "model": {"model_dir": str(base), "model_name": "tiny", "backend": backend},
        "embeddings": {"embedding_model_name": None},
    }
    server = ServerProcess(base / f"server-{backend}", config).start(timeout=600)
    try:
        served = bench_http(server.url, API_KEY)
    finally:
        server.stop()
    print(
        f"{backend}: {BENCH_STREAMS} streams x {BENCH_TOKENS} tokens: engine alone "
        f"{alone:.1f} tokens/s, through HTTP {served:.1f} tokens/s ({served / alone:.0%})"
    )


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "model":
        base = Path(argv[1])
        model_dir = build_check_model(base)
        build_lora(base / "tiny-lora", model_dir)
        print(f"built {model_dir} and {base / 'tiny-lora'}")
        return 0
    if len(argv) == 3 and argv[0] == "bench":
        bench(Path(argv[1]), argv[2])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
