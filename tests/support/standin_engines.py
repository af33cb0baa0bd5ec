"""STAND-INS for the CUDA parts of the GPU engines, so the real server runs them on a CPU.

``install()`` is called by tests/support/standin_main.py before the server starts:

- ExLlamaV2: exllamav2's own Python imports over the STUB of its extension
  (tests/support/exllamav2_stub.py); its real config, tokenizer, model object, jobs, sampler
  settings, grammar filter and LoRA loader run. Only the weight upload (kernels) is skipped:
  every module is placed on the CPU without weights. The generator is the scripted stand-in.
- ExLlamaV3: exllamav3 cannot import without CUDA, so tests/support/exllamav3_standin.py takes
  its place; Serval's ExLlamaV3 engine code runs over it unchanged.
- The registry is told a GPU is present, so the server chooses and loads these engines.

Nothing here is used outside tests. The real libraries on a GPU: tests/gpu/, scripts/gpu_check.sh.
"""

from __future__ import annotations

import sys
from typing import Any

from backends import registry
from backends.exllama.loading import Progress, WeightsLayout
from tests.support import exllamav3_standin
from tests.support.exllamav2_stub import import_exllamav2
from tests.support.scripted_generator import ScriptedGenerator


def _v2_weights(
    engine: Any, config: Any, layout: WeightsLayout, progress: Progress
) -> tuple[Any, Any]:
    """A real ``ExLlamaV2`` model object with every module on the CPU and no weights."""
    from exllamav2 import ExLlamaV2

    model = ExLlamaV2(config)
    for done, module in enumerate(model.modules):
        module.set_device_idx(-1)
        progress(done, len(model.modules))
    progress(len(model.modules), len(model.modules))
    return model, None


def _v2_generator(engine: Any) -> ScriptedGenerator:
    assert engine.limits is not None
    generator = ScriptedGenerator(
        tokens=engine.encode(exllamav3_standin.SCRIPT, add_bos=False),
        piece=engine.token_piece,
        capacity=engine.limits.cache_tokens,
        step_seconds=exllamav3_standin.STEP_SECONDS,
        vocab_size=engine.vocab_size,
        draft_tokens=engine.limits.draft_tokens,
    )
    engine.use_loras(generator)
    return generator


def install() -> None:
    from backends.exllamav2.engine import ExLlamaV2Engine

    registry.cuda_available = lambda: True  # type: ignore[assignment]
    import_exllamav2()
    ExLlamaV2Engine._load_weights = _v2_weights  # type: ignore[method-assign,assignment]
    ExLlamaV2Engine.make_generator = _v2_generator  # type: ignore[method-assign,assignment]
    sys.modules.update(exllamav3_standin.modules())
