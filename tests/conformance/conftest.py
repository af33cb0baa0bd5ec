"""One server per engine for the conformance suite, all started at once.

- transformers: the real default model on the real CPU engine.
- exllamav2: exllamav2's own Python over the STUB of its CUDA extension, the scripted stand-in
  generator in place of the forward pass (tests/support/standin_engines.py).
- exllamav3: Serval's ExLlamaV3 engine over the STAND-IN of exllamav3's API, same generator.
- llamacpp: the default model's own GGUF file on the real llama.cpp engine (its PEFT LoRA is
  converted to a GGUF adapter).

Every test in tests/conformance/ takes ``served`` and so runs against each engine. What only
real logits can show is skipped on the stand-ins with the reason (tests/gpu/ covers it there).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backends.registry import engine_class, unavailable_reason
from tests.conftest import DEFAULT_GGUF_MODEL, DEFAULT_MODEL
from tests.support.server import ROOT, ServerProcess
from tests.support.tiny_lora import build_tiny_lora
from tests.support.tiny_model import build_tiny_exllama_model

# The stand-ins first: their tests run while the transformers server still starts.
ENGINES = ("exllamav2", "exllamav3", "transformers", "llamacpp")
CONTEXT = 256
STARTUP_TIMEOUT = 400
STANDIN_MAIN = ROOT / "tests" / "support" / "standin_main.py"


@dataclass
class Served:
    """A running server and what the suite needs to know about its engine; ``startup_loras``
    is what ``GET /v1/lora`` said before any test ran (the start-up ``lora.loras``)."""

    backend: str
    server: ServerProcess
    model: str
    lora: str
    real_logits: bool
    startup_loras: list[tuple[str, float]] | None = None

    @property
    def draft_modes(self) -> frozenset[str]:
        """The drafts the engine advertises (its typed ``draft_modes``)."""
        return frozenset(engine_class(self.backend).draft_modes)

    def needs_real_logits(self, what: str) -> None:
        if not self.real_logits:
            pytest.skip(
                f"{self.backend} runs over a scripted stand-in generator on a CPU, which cannot "
                f"show {what}; tests/gpu/ checks it on a GPU"
            )


def _config(model_dir: Path, model: str, backend: str, lora_dir: Path, lora: str) -> dict:
    """A server of ``model`` on ``backend``; the start-up LoRA at scaling 0 leaves the answers
    those of the model, so every test may assume none is in effect."""
    return {
        "network": {"api_servers": ["OAI", "Kobold"], "sse_ping_interval": 1},
        "model": {
            "model_dir": str(model_dir),
            "model_name": model,
            "backend": backend,
            "max_seq_len": CONTEXT,
            "use_as_default": ["backend", "max_seq_len"],  # loads over the API keep both
        },
        "draft_model": {"draft_model_dir": str(model_dir)},
        "lora": {"lora_dir": str(lora_dir), "loras": [{"name": lora, "scaling": 0.0}]},
        "embeddings": {"embedding_model_name": None},
    }


@pytest.fixture(scope="session")
def conformance_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    """The four servers, launched at once (each test waits only for its own)."""
    if not (DEFAULT_MODEL / "config.json").is_file():
        pytest.fail("the default model is missing: run ./test.sh (it fetches it)")
    from tests.support.exllamav2_stub import import_exllamav2

    try:
        import_exllamav2()
    except ModuleNotFoundError as exc:
        pytest.fail(f"{exc}: run ./test.sh, whose set-up installs exllamav2 for the CPU tests")
    base = tmp_path_factory.mktemp("conformance")
    models, loras = base / "models", base / "loras"
    tiny = build_tiny_exllama_model(models / "tiny")
    if not DEFAULT_GGUF_MODEL.is_dir():
        pytest.fail("the default model's GGUF is missing: run ./test.sh (it fetches it)")
    servers = {
        **{  # the default model: its HF folder on transformers, its GGUF file on llama.cpp
            backend: Served(
                backend,
                ServerProcess(
                    base / backend,
                    _config(ROOT / "models", model.name, backend, loras, "smol-lora"),
                ),
                model.name,
                "smol-lora",
                real_logits=True,
            )
            for backend, model in (
                ("transformers", DEFAULT_MODEL),
                ("llamacpp", DEFAULT_GGUF_MODEL),
            )
        },
        **{
            backend: Served(
                backend,
                ServerProcess(
                    base / backend,
                    _config(models, "tiny", backend, loras, "tiny-lora"),
                    entry=STANDIN_MAIN,
                ),
                "tiny",
                "tiny-lora",
                real_logits=False,
            )
            for backend in ("exllamav2", "exllamav3")
        },
    }
    if unavailable_reason("llamacpp"):  # a CPU without AVX2: its tests are skipped, with why
        del servers["llamacpp"]
    try:
        build_tiny_lora(tiny, loras / "tiny-lora")
        for backend in ("exllamav2", "exllamav3"):
            servers[backend].server.launch()
        build_tiny_lora(DEFAULT_MODEL, loras / "smol-lora")  # while the stand-ins start
        servers["transformers"].server.launch()
        if "llamacpp" in servers:
            servers["llamacpp"].server.launch()
        yield servers
    finally:
        for served in servers.values():
            served.server.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first test also waits for the three servers to start (slow on a busy machine)."""
    for item in items:
        if item.path.parent == Path(__file__).parent:
            item.add_marker(pytest.mark.timeout(STARTUP_TIMEOUT))


@pytest.fixture(scope="session", params=ENGINES)  # session scope: tests run engine by engine
def served(request: pytest.FixtureRequest, conformance_servers: dict[str, Served]) -> Served:
    if request.param not in conformance_servers:
        pytest.skip(f"the llamacpp engine cannot run here: {unavailable_reason('llamacpp')}")
    served = conformance_servers[request.param]
    served.server.wait_ready(timeout=STARTUP_TIMEOUT - 60)  # at once when it is up already
    if served.startup_loras is None:
        with served.server.client() as client:
            in_use = client.get("/v1/lora").json()["data"]
        served.startup_loras = [(lora["id"], lora["scaling"]) for lora in in_use]
    return served
