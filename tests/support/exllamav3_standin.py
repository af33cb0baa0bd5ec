"""STAND-IN for the part of exllamav3's Python API that Serval calls, for CPU tests only.

exllamav3 imports only with its compiled CUDA extension (an empty stub is not enough, unlike
exllamav2's), so on a CPU machine this module takes its place in ``sys.modules``. It implements
just what backends/exllamav3/engine.py uses, with the signatures docs/exllama.md records:
``Config``, ``Tokenizer`` (over the ``tokenizers`` library, as exllamav3's own is), ``Model`` and
``Cache`` that hold no weights, ``Job``, ``LLGuidanceFilter`` (llguidance, as in exllamav3),
the custom sampler steps as records, ``LoRA``, and a ``Generator`` that is the scripted
stand-in (tests/support/scripted_generator.py). So Serval's ExLlamaV3 engine code (sizing,
special tokens, job and sampler arguments, grammar, LoRA switching) runs as on a GPU; the
forward pass and the sampling itself do not.
"""

from __future__ import annotations

import importlib.machinery
import json
import types
from pathlib import Path
from typing import Any

import llguidance
import numpy as np
import torch
from tokenizers import Tokenizer as HFTokenizer

from backends.grammar_threads import parser_limits
from tests.support.scripted_generator import ScriptedGenerator

STEP_SECONDS = 0.01
SCRIPT = " the quick brown fox jumps over the lazy dog and runs into the woods,"


class Config:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        values = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        self.max_position_embeddings = int(values.get("max_position_embeddings", 2048))
        self.vocab_size = int(values["vocab_size"])
        self.num_hidden_layers = int(values.get("num_hidden_layers", 1))
        eos = values.get("eos_token_id")
        self.eos_token_id_list = eos if isinstance(eos, list) else [eos]

    @classmethod
    def from_directory(cls, directory: str) -> Config:
        return cls(Path(directory))


class Tokenizer:
    def __init__(self, config: Config) -> None:
        self.tokenizer = HFTokenizer.from_file(str(config.directory / "tokenizer.json"))
        settings = config.directory / "tokenizer_config.json"
        self.tokenizer_config_dict: dict[str, Any] = (
            json.loads(settings.read_text(encoding="utf-8")) if settings.is_file() else {}
        )

        def special(name: str) -> tuple[str | None, int | None]:
            token = self.tokenizer_config_dict.get(name)
            return token, self.tokenizer.token_to_id(token) if token else None

        self.bos_token, self.bos_token_id = special("bos_token")
        self.eos_token, self.eos_token_id = special("eos_token")
        self.pad_token, self.pad_token_id = special("pad_token")
        self.unk_token, self.unk_token_id = special("unk_token")

    @classmethod
    def from_config(cls, config: Config) -> Tokenizer:
        return cls(config)

    def encode(
        self, text: str, add_bos: bool = False, encode_special_tokens: bool = False
    ) -> torch.Tensor:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if add_bos and self.bos_token_id is not None:
            ids = [self.bos_token_id, *ids]
        return torch.tensor([ids], dtype=torch.long)

    def decode(self, ids: torch.Tensor, decode_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(
            ids.reshape(-1).tolist(), skip_special_tokens=not decode_special_tokens
        )

    def get_vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def get_id_to_piece_list(self, include_special_tokens: bool = False) -> list[str]:
        return [
            self.tokenizer.decode([i], skip_special_tokens=not include_special_tokens)
            for i in range(self.get_vocab_size())
        ]


class Model:
    """Holds no weights: ``load`` reports progress per layer as exllamav3's loader does."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loaded = False

    @classmethod
    def from_config(cls, config: Config, component: str = "text") -> Model:
        return cls(config)

    def load(self, callback: Any = None, **placement: Any) -> None:
        modules = self.config.num_hidden_layers + 2
        for done in range(modules + 1):
            if callback is not None:
                callback(done, modules)
        self.loaded = True

    def unload(self) -> None:
        self.loaded = False


class CacheLayer_fp16:
    pass


class CacheLayer_quant:
    pass


class Cache:
    def __init__(self, model: Model, max_num_tokens: int, **layout: Any) -> None:
        self.model = model
        self.max_num_tokens = max_num_tokens
        self.layout = layout


def Generator(
    model: Model, cache: Cache, tokenizer: Tokenizer, **options: Any
) -> ScriptedGenerator:
    pieces = tokenizer.get_id_to_piece_list(True)
    return ScriptedGenerator(
        tokens=tokenizer.encode(SCRIPT).reshape(-1).tolist(),
        piece=lambda token: pieces[token],
        capacity=cache.max_num_tokens,
        step_seconds=STEP_SECONDS,
        vocab_size=model.config.vocab_size,
    )


class Job:
    def __init__(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        stop_conditions: list[int | str] | None = None,
        filters: list[Any] | None = None,
        return_logits: bool = False,
        **settings: Any,
    ) -> None:
        self.input_ids = input_ids
        self.max_new_tokens = max_new_tokens
        conditions = stop_conditions or []
        self.stop_tokens = {c for c in conditions if isinstance(c, int)}
        self.stop_strings = {c for c in conditions if isinstance(c, str)}
        self.filters = filters or []
        self.return_logits = return_logits
        self.settings = settings


class LLGuidanceFilter:
    """An llguidance grammar over the tokenizer, masking logits the way the real filter does."""

    def __init__(self, tokenizer: Tokenizer, llg_grammar: str, **options: Any) -> None:
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        ll_tokenizer = llguidance.LLTokenizer(
            tokenizer.tokenizer.to_str(), n_vocab=tokenizer.get_vocab_size(), eos_token=eos
        )
        self.matcher = llguidance.LLMatcher(ll_tokenizer, llg_grammar, limits=parser_limits())
        if self.matcher.is_error():
            raise ValueError(self.matcher.get_error())

    def prepare_logit_mask(self) -> bool:
        return True

    def mask_logits(self, logits: torch.Tensor) -> torch.Tensor:
        packed = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        bits = torch.from_numpy(np.unpackbits(packed, bitorder="little").astype(np.bool_))
        allowed = torch.zeros(logits.shape[-1], dtype=torch.bool)
        width = min(bits.numel(), allowed.numel())
        allowed[:width] = bits[:width]
        return logits.masked_fill_(~allowed, float("-inf"))

    def feed(self, token: torch.Tensor) -> None:
        if not self.matcher.is_stopped():
            self.matcher.consume_token(int(token.reshape(-1)[0]))


class CustomSampler:
    def __init__(self, steps: list[Any]) -> None:
        self.steps = steps


class _Step:
    """One of exllamav3's ``SS_*`` sampling steps, kept as its name and arguments."""

    def __init__(self, name: str, **args: Any) -> None:
        self.name = name
        self.args = args


def _step_class(name: str) -> Any:
    if not name.startswith("SS_"):
        raise AttributeError(name)
    return lambda **args: _Step(name, **args)


class LoRA:
    def __init__(self, model: Model, directory: Path, lora_scaling: float) -> None:
        if not (directory / "adapter_config.json").is_file():
            raise FileNotFoundError(f"no adapter_config.json in {directory}")
        self.model = model
        self.scaling = lora_scaling

    @classmethod
    def from_directory(cls, model: Model, directory: str, lora_scaling: float = 1.0) -> LoRA:
        return cls(model, Path(directory), lora_scaling)

    def unload(self) -> None:
        pass


def modules() -> dict[str, types.ModuleType]:
    """``exllamav3`` and the submodules Serval imports from, ready for ``sys.modules``."""

    def module(name: str, **members: Any) -> types.ModuleType:
        made = types.ModuleType(name, "STAND-IN of exllamav3 (CPU tests only)")
        made.__spec__ = importlib.machinery.ModuleSpec(name, None)
        made.__dict__.update(members)
        return made

    custom = module("exllamav3.generator.sampler.custom", CustomSampler=CustomSampler)
    custom.__getattr__ = _step_class  # type: ignore[method-assign]
    sampler = module("exllamav3.generator.sampler", custom=custom)
    generator = module("exllamav3.generator", sampler=sampler)
    lora = module("exllamav3.model.lora", LoRA=LoRA)
    model = module("exllamav3.model", lora=lora)
    stand_ins = (Config, Tokenizer, Model, Cache, CacheLayer_fp16, CacheLayer_quant, Generator, Job)
    root = module(
        "exllamav3",
        **{stand_in.__name__: stand_in for stand_in in (*stand_ins, LLGuidanceFilter)},
        generator=generator,
        model=model,
    )
    return {m.__name__: m for m in (root, generator, sampler, custom, model, lora)}
