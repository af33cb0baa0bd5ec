"""The ExLlamaV3 engine: EXL3 quants and plain HF folders through ExLlamaV3's generator, driven
on a worker thread like the ExLlamaV2 engine (see backends/exllama/driver.py).

ExLlamaV3 pages its cache without flash-attn, so jobs run in batches on any supported GPU. Its
cache must exist before the model loads (the loader allocates it) and hold at least one prefill
chunk. This module imports exllamav3 only inside functions: the import fails without CUDA.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from backends.base import GenerationRequest, LoadOptions
from backends.exllama.engine import ExLlamaEngine, Limits, special_tokens_of, unique_ids
from backends.exllama.loading import Progress, WeightsLayout
from backends.exllama.sampling import token_biases
from backends.exllama.sizing import cache_mode, cache_tokens, round_down_to_page
from backends.exllamav3 import sampler
from backends.sampling import SamplingParams
from common.errors import BadRequestError, GrammarError

BUILD_MINUTES = 4.5
DEFAULT_BATCH = 256
NGRAM_MATCH_MIN = 2
QUANT_BITS = {"Q8": 8, "Q6": 6, "Q4": 4}


def cache_layer(mode: str) -> dict[str, Any]:
    """``Cache`` keyword arguments for a cache mode (FP16, or K and V quantised to Q bits)."""
    from exllamav3 import CacheLayer_fp16, CacheLayer_quant

    mode = cache_mode(mode)
    if mode == "FP16":
        return {"layer_type": CacheLayer_fp16}
    bits = QUANT_BITS[mode]
    return {"layer_type": CacheLayer_quant, "k_bits": bits, "v_bits": bits}


def placement(options: LoadOptions, gpu_split: tuple[float, ...], autosplit: bool) -> dict:
    """``Model.load`` arguments: tensor parallel, autosplit with a reserve, or GB per GPU."""
    if options.tensor_parallel:
        return {"tensor_p": True, **({"use_per_device": list(gpu_split)} if gpu_split else {})}
    if autosplit:
        return {"reserve_per_device": [mb / 1024 for mb in options.autosplit_reserve]}
    return {"use_per_device": list(gpu_split)} if gpu_split else {}


class ExLlamaV3Engine(ExLlamaEngine):
    backend = "exllamav3"
    library = "exllamav3"
    extension = "exllamav3_ext"
    build_minutes = BUILD_MINUTES

    # ----- loading ----------------------------------------------------------------------------

    def loaded_summary(self) -> str:
        limits = self.limits
        assert limits is not None
        return (
            f"{self.options.name} loaded with ExLlamaV3: context {limits.max_seq_len}, cache "
            f"{limits.cache_tokens} tokens ({self._cache_mode}), up to {limits.max_batch_size} "
            f"jobs at once" + (f", drafting ({self.draft_name})" if self.draft else "")
        )

    def read_model_files(self) -> None:
        from exllamav3 import Config, Tokenizer

        options = self.options
        try:
            self.config = Config.from_directory(str(options.path))
            tokenizer = Tokenizer.from_config(self.config)
        except Exception as exc:
            raise BadRequestError(f"ExLlamaV3 cannot read {options.path.name}: {exc}") from exc
        if options.rope_scale != 1.0 or options.rope_alpha not in (None, 1.0):
            logger.warning("rope_scale and rope_alpha are not applied by the exllamav3 engine")
        native = self.config.max_position_embeddings
        max_seq_len = native if options.max_seq_len in (None, 0, -1) else options.max_seq_len
        chunk = round_down_to_page(options.chunk_size)
        cache = cache_tokens(options.cache_size, max_seq_len, minimum=chunk)
        special = special_tokens_of(
            tokenizer,
            tokenizer.tokenizer,
            unique_ids(self.config.eos_token_id_list, tokenizer.eos_token_id),
        )
        self.settle_tokens(
            tokenizer,
            tokenizer.tokenizer,
            self.config.vocab_size,
            special,
            tokenizer.get_id_to_piece_list(True),
        )
        self.limits = Limits(
            max_seq_len=min(max_seq_len, cache),
            cache_tokens=cache,
            max_batch_size=options.max_batch_size or DEFAULT_BATCH,
            chunk_size=chunk,
            draft_tokens=self.draft.num_tokens if self.draft else 0,
        )

    def read_draft_config(self) -> Any:
        from exllamav3 import Config

        draft = self.draft
        assert draft is not None and draft.path is not None
        return Config.from_directory(str(draft.path))

    def _load_weights(
        self, config: Any, layout: WeightsLayout, progress: Progress
    ) -> tuple[Any, Any]:
        from exllamav3 import Cache, Model

        limits = self.limits
        assert limits is not None
        model = Model.from_config(config)
        cache = Cache(model, max_num_tokens=limits.cache_tokens, **cache_layer(layout.cache_mode))
        try:
            model.load(
                callback=progress,
                max_chunk_size=limits.chunk_size,
                **placement(self.options, layout.gpu_split, layout.autosplit),
            )
        except Exception:
            model.unload()
            raise
        return model, cache

    def make_generator(self) -> Any:
        from exllamav3 import Generator

        limits = self.limits
        assert limits is not None
        ngram = self.draft is not None and self.draft.mode == "ngram"
        return Generator(
            **self.generator_args(),
            num_draft_tokens=limits.draft_tokens or None,
            ngram_match_min=NGRAM_MATCH_MIN if ngram else 0,
        )

    # ----- jobs -------------------------------------------------------------------------------

    def unsupported_params(self, params: SamplingParams) -> list[str]:
        return sampler.unsupported(params)

    def job_reserve(self, request: GenerationRequest) -> int:
        """ExLlamaV3 keeps one token and a draft window free beyond the output."""
        assert self.limits is not None
        return 1 + self.limits.draft_tokens

    def make_sampler(self, params: SamplingParams, constrained: bool) -> Any:
        from exllamav3.generator.sampler import custom

        steps = sampler.sampler_steps(
            params,
            biases=token_biases(params, self.special_tokens.eos_ids, self.vocab_size, constrained),
            dry_breakers=(
                self.dry_breakers(params.dry_sequence_breakers) if params.dry_multiplier else None
            ),
        )
        extra = {"SS_XTC": {"tokenizer": self.tokenizer}}
        return custom.CustomSampler(
            [getattr(custom, step.name)(**step.args, **extra.get(step.name, {})) for step in steps]
        )

    def build_job(self, request: GenerationRequest, max_new_tokens: int) -> Any:
        import torch
        from exllamav3 import Job, LLGuidanceFilter

        params = request.params
        filters = []
        if request.grammar is not None:
            try:
                filters.append(
                    LLGuidanceFilter(
                        self.tokenizer,
                        llg_grammar=request.grammar.grammar,
                        eos_after_completed=True,
                    )
                )
            except ValueError as exc:
                raise GrammarError(f"Invalid {request.grammar.description}: {exc}") from exc
        return Job(
            input_ids=torch.tensor([request.prompt_ids], dtype=torch.long),
            max_new_tokens=max_new_tokens,
            min_new_tokens=params.min_tokens,
            sampler=self.make_sampler(params, constrained=bool(filters)),
            seed=params.seed,
            stop_conditions=[*sorted(request.stop_token_ids), *request.stop_strings],
            decode_special_tokens=True,
            return_logits=request.logprobs is not None,
            filters=filters or None,
            token_healing=params.token_healing,
            banned_strings=list(params.banned_strings) or None,
            identifier=request.request_id,
            embeddings=self.job_embeddings(request),
        )

    # ----- vision -----------------------------------------------------------------------------

    def open_vision(self) -> tuple[Callable[[Any], Any], Callable[[Any], list[int]]] | None:
        """ExLlamaV3's vision component, for architectures that define one."""
        if "vision" not in getattr(self.config, "model_classes", {}):
            return None
        from exllamav3 import Model

        tower = Model.from_config(self.config, component="vision")
        tower.load()
        self.vision_tower = tower

        def embed(image: Any) -> Any:
            return tower.get_image_embeddings(tokenizer=self.tokenizer, image=image)

        # the embedding's token string: its wrapper tokens and its own ids in their places
        return embed, lambda embedding: list(embedding.token_list)

    # ----- LoRAs ------------------------------------------------------------------------------

    def open_lora(self, path: Path, scaling: float) -> Any:
        from exllamav3.model.lora import LoRA

        return LoRA.from_directory(self.model, str(path), lora_scaling=scaling)

    def use_loras(self, generator: Any) -> None:
        # An ExLlamaV3 LoRA attaches itself to the model; only the cached K/V must go.
        generator.pagetable.reset_page_table()
