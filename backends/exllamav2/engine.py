"""The ExLlamaV2 engine: EXL2/GPTQ quants and plain HF folders through ExLlamaV2's dynamic
generator, driven on a worker thread (see backends/exllama/driver.py).

Without flash-attn >= 2.5.7 the generator runs unpaged: one job at a time (others queue), a
job may fill the whole cache. Read docs/exllama.md before changing anything here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from backends.base import GenerationRequest, LoadOptions
from backends.exllama.engine import ExLlamaEngine, Limits
from backends.exllama.loading import Progress, WeightsLayout
from backends.exllama.sizing import PAGE_SIZE, cache_mode, cache_tokens, round_down_to_page
from backends.exllamav2 import sampler
from backends.exllamav2.model_files import read_config, read_tokenizer, special_tokens
from backends.sampling import SamplingParams
from common.errors import ContextLengthError

BUILD_MINUTES = 2
DEFAULT_PAGED_BATCH = 32
# The generator's logits buffer holds max_q_size (8) rows per job: the last token plus drafts.
MAX_DRAFT_TOKENS = 7
MIB = 1024**2


def cache_class(mode: str) -> Any:
    import exllamav2

    return {
        "FP16": exllamav2.ExLlamaV2Cache,
        "Q8": exllamav2.ExLlamaV2Cache_Q8,
        "Q6": exllamav2.ExLlamaV2Cache_Q6,
        "Q4": exllamav2.ExLlamaV2Cache_Q4,
    }[cache_mode(mode)]


@functools.cache
def warn_unpaged() -> None:
    """Once per process: why ExLlamaV2 runs one request at a time, and the fix."""
    logger.warning(
        "ExLlamaV2 runs one request at a time here: paged attention, which batching needs, "
        "requires flash-attn >= 2.5.7, which is not installed; scripts/setup.sh installs a "
        "prebuilt flash-attn where one fits this torch (docs/exllama.md, Prebuilt wheels)"
    )


def reserve_bytes(reserve_mb: tuple[float, ...]) -> list[int]:
    """Autosplit's VRAM reserve per GPU, in bytes, one entry for every visible GPU."""
    import torch

    count = max(torch.cuda.device_count(), 1)
    wanted = [int(mb * MIB) for mb in reserve_mb] or [96 * MIB]
    return (wanted + [64 * MIB] * count)[:count]


class ExLlamaV2Engine(ExLlamaEngine):
    backend = "exllamav2"
    library = "exllamav2"
    extension = "exllamav2_ext"
    build_minutes = BUILD_MINUTES
    tokens_outlive_rewind = True

    def __init__(self, options: LoadOptions) -> None:
        super().__init__(options)
        self.paged = False
        self._ll_tokenizer: Any = None

    # ----- loading ----------------------------------------------------------------------------

    def read_model_files(self) -> None:
        """Config, tokenizer and sizes: everything before the weights (pure Python)."""
        from exllamav2.attn import has_flash_attn_with_paged

        options = self.options
        self.paged = bool(has_flash_attn_with_paged)
        if not self.paged:
            warn_unpaged()
        chunk = round_down_to_page(options.chunk_size)
        read = read_config(
            options.path,
            max_seq_len=options.max_seq_len,
            rope_scale=options.rope_scale,
            rope_alpha_setting=options.rope_alpha,
            chunk_size=chunk,
            flash_attn=self.paged,
        )
        self.config, self.rope_alpha = read.config, read.rope_alpha
        tokenizer = read_tokenizer(self.config)
        self.settle_tokens(
            tokenizer,
            tokenizer.tokenizer_model.hf_tokenizer,
            vocab_size=self.config.vocab_size,
            special=special_tokens(self.config, tokenizer),
            pieces=tokenizer.get_id_to_piece_list(True),
        )
        max_seq_len = self.config.max_seq_len
        cache = cache_tokens(options.cache_size, max_seq_len)
        draft_tokens = 0
        if self.draft is not None:
            draft_tokens = min(self.draft.num_tokens, MAX_DRAFT_TOKENS)
            if draft_tokens < self.draft.num_tokens:
                logger.warning(f"ExLlamaV2 drafts at most {MAX_DRAFT_TOKENS} tokens per step")
        self.limits = Limits(
            max_seq_len=min(max_seq_len, cache),
            cache_tokens=cache,
            max_batch_size=(options.max_batch_size or DEFAULT_PAGED_BATCH) if self.paged else 1,
            chunk_size=chunk,
            draft_tokens=draft_tokens,
        )

    def read_draft_config(self) -> Any:
        draft = self.draft
        assert draft is not None and draft.path is not None and self.limits is not None
        return read_config(
            draft.path,
            max_seq_len=self.config.max_seq_len,
            rope_scale=draft.rope_scale,
            rope_alpha_setting=draft.rope_alpha,
            chunk_size=self.limits.chunk_size,
            flash_attn=self.paged,
        ).config

    def _load_weights(
        self, config: Any, layout: WeightsLayout, progress: Progress
    ) -> tuple[Any, Any]:
        """Weights and a cache of ``limits.cache_tokens`` tokens: tensor parallel, autosplit or
        a manual split (GB per GPU)."""
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache_TP

        assert self.limits is not None
        tokens = self.limits.cache_tokens
        base = cache_class(layout.cache_mode)
        model = ExLlamaV2(config)
        try:
            if self.options.tensor_parallel:
                model.load_tp(
                    gpu_split=list(layout.gpu_split) or None,
                    callback=progress,
                    expect_cache_tokens=tokens,
                    expect_cache_base=base,
                )
                cache = ExLlamaV2Cache_TP(model, base=base, max_seq_len=tokens)
            elif layout.autosplit:
                cache = base(model, max_seq_len=tokens, lazy=True)
                model.load_autosplit(
                    cache,
                    reserve_vram=reserve_bytes(self.options.autosplit_reserve),
                    callback=progress,
                )
            else:
                model.load(gpu_split=list(layout.gpu_split) or None, callback=progress)
                cache = base(model, max_seq_len=tokens)
        except Exception:
            model.unload()
            raise
        return model, cache

    def make_generator(self) -> Any:
        """A dynamic generator over the loaded model (also after a failure: same model, cache
        and LoRAs)."""
        from exllamav2.generator import ExLlamaV2DynamicGenerator

        limits = self.limits
        assert limits is not None
        draft = self.draft
        ngram = draft is not None and draft.mode == "ngram"
        generator = ExLlamaV2DynamicGenerator(
            **self.generator_args(),
            paged=self.paged,
            num_draft_tokens=limits.draft_tokens or 4,
            use_ngram_draft=ngram,
        )
        if self.loras:
            generator.set_loras([lora for *_, lora in self.loras])
        return generator

    def loaded_summary(self) -> str:
        limits = self.limits
        assert limits is not None
        mode = (
            f"paged, up to {limits.max_batch_size} jobs at once"
            if self.paged
            else "unpaged (no flash-attn >= 2.5.7): one job at a time, torch SDPA off"
        )
        draft = f", drafting {limits.draft_tokens} tokens ({self.draft_name})" if self.draft else ""
        return (
            f"{self.options.name} loaded with ExLlamaV2: context {limits.max_seq_len}, cache "
            f"{limits.cache_tokens} tokens ({self._cache_mode}), {mode}{draft}"
        )

    # ----- jobs -------------------------------------------------------------------------------

    def unsupported_params(self, params: SamplingParams) -> list[str]:
        found = sampler.unsupported(params)
        if params.cfg and not self.paged:
            found.append("cfg_scale")  # two sequences in one job need paged attention
        return found

    def guided(self, params: SamplingParams) -> bool:
        """Whether a job of ``params`` runs with CFG (ExLlamaV2's own: paged mode only)."""
        return params.cfg and self.paged

    def job_reserve(self, request: GenerationRequest) -> int:
        """Drafting jobs end ``num_draft_tokens`` early, so they ask for that many more; a
        healed token takes one more place."""
        assert self.limits is not None
        return self.limits.draft_tokens + int(request.params.token_healing)

    def room_for(self, request: GenerationRequest) -> int:
        """With CFG the negative prompt's sequence grows beside the prompt's, each in its own
        pages: both must fit in the cache together (TabbyAPI's check)."""
        room = super().room_for(request)
        if not self.guided(request.params):
            return room
        assert self.limits is not None
        lengths = (len(request.prompt_ids), len(request.params.negative_prompt_ids))
        reserve = self.job_reserve(request)
        # Each sequence may take a page less one token more than it fills.
        pair = (self.limits.cache_tokens - sum(lengths) - 2 * (reserve + PAGE_SIZE - 1)) // 2
        if pair < 1:
            raise ContextLengthError(
                f"The prompt ({lengths[0]} tokens) and the negative prompt ({lengths[1]} tokens) "
                f"do not fit together in this model's cache ({self.limits.cache_tokens} tokens).",
                param="negative_prompt",
            )
        return min(room, pair)

    def build_job(self, request: GenerationRequest, max_new_tokens: int) -> Any:
        import torch
        from exllamav2.generator import ExLlamaV2DynamicJob

        assert self.limits is not None
        params = request.params
        constrained = request.grammar is not None
        guided = self.guided(params)
        settings = sampler.to_settings(
            params,
            eos_ids=self.special_tokens.eos_ids,
            vocab_size=self.vocab_size,
            dry_breakers=self.dry_breakers,
            constrained=constrained,
            guided=guided,
        )
        filters = [self.grammar_filter(request.grammar.grammar)] if request.grammar else []
        prompts = [request.prompt_ids, *([list(params.negative_prompt_ids)] if guided else [])]
        return ExLlamaV2DynamicJob(
            input_ids=[torch.tensor([ids], dtype=torch.long) for ids in prompts],
            max_new_tokens=max_new_tokens + self.limits.draft_tokens,
            min_new_tokens=params.min_tokens,
            gen_settings=settings,
            seed=params.seed,
            stop_conditions=[*sorted(request.stop_token_ids), *request.stop_strings],
            decode_special_tokens=True,
            return_logits=request.logprobs is not None,
            filters=filters,
            token_healing=params.token_healing,
            banned_strings=None if filters else list(params.banned_strings) or None,
            identifier=request.request_id,
            embeddings=self.job_embeddings(request),
        )

    def grammar_filter(self, grammar: str) -> Any:
        from backends.exllamav2.grammar import GrammarFilter, make_ll_tokenizer

        eos_ids = self.special_tokens.eos_ids
        if self._ll_tokenizer is None:
            width = max(self.vocab_size, self.tokenizer.get_vocab_size())
            self._ll_tokenizer = make_ll_tokenizer(
                self.tokenizer.tokenizer_model.hf_tokenizer, width, eos_ids
            )
        return GrammarFilter(self.model, self.tokenizer, self._ll_tokenizer, grammar, eos_ids)

    # ----- vision -----------------------------------------------------------------------------

    def open_vision(self) -> tuple[Callable[[Any], Any], Callable[[Any], list[int]]] | None:
        """ExLlamaV2's vision tower (Pixtral, Qwen2-VL, Gemma 3: docs/exllama.md, Vision)."""
        if self.config.vision_model_type is None:
            return None
        from exllamav2 import ExLlamaV2VisionTower

        tower = ExLlamaV2VisionTower(self.config)
        tower.load()
        self.vision_tower = tower

        def embed(image: Any) -> Any:
            return tower.get_image_embeddings(
                model=self.model, tokenizer=self.tokenizer, image=image
            )

        return embed, lambda embedding: list(embedding.get_ids())

    # ----- LoRAs ------------------------------------------------------------------------------

    def open_lora(self, path: Path, scaling: float) -> Any:
        from exllamav2 import ExLlamaV2Lora

        return ExLlamaV2Lora.from_directory(self.model, str(path), lora_scaling=scaling)

    def use_loras(self, generator: Any) -> None:
        if self.loras:
            generator.set_loras([lora for *_, lora in self.loras])
        else:  # set_loras(None) leaves an empty list that breaks the next forward pass
            generator.current_loras = None
        generator.reset_page_table()  # cached K/V was computed with other adapters

    # ----- unloading --------------------------------------------------------------------------

    def free(self) -> None:
        super().free()
        self._ll_tokenizer = None
