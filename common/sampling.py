"""Sampler parameters: one request model shared by the OpenAI and Kobold routes, and presets.

A request's sampler fields are all optional (``None`` means "not sent"). They are resolved into a
concrete, frozen :class:`SamplingParams` by :func:`resolve`, which applies the active override
preset: a preset value fills a field the client left out, ``force`` replaces what the client
sent, and ``additive`` puts the preset's list before the client's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import yaml
from loguru import logger
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    field_validator,
    model_validator,
)

from backends.sampling import KOBOLD_SAMPLERS, SamplingParams
from common.errors import BadRequestError, NotFoundError
from common.paths import safe_child

PRESET_DIR = Path(__file__).resolve().parent.parent / "sampler_overrides"


def _aliases(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def _csv_ints(value: Any) -> Any:
    """Accept ``[1, 2]``, ``"1,2"`` or ``"[1, 2]"`` for token id lists."""
    if isinstance(value, str):
        text = value.strip().strip("[]")
        if not text:
            return []
        try:
            return [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ValueError("expected token ids as a list or a comma-separated string") from None
    return value


def _string_list(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    return value


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _off_unless(test: Callable[[float], bool]) -> Callable[[Any], bool]:
    """A numeric setting that is on when ``test`` holds for it (other values leave it off)."""
    return lambda value: (number := _number(value)) is not None and test(number)


NOT_APPLIED: dict[str, Callable[[Any], bool]] = {
    "speculative_ngram": lambda value: value is True,
    "smoothing_curve": _off_unless(lambda v: v != 1),  # 1: plain quadratic smoothing
    "adaptive_target": _off_unless(lambda v: v >= 0),  # KoboldCpp's adaptive-P: < 0 is off
    "adaptive_decay": lambda value: False,  # named with adaptive_target only (see below)
}
"""Settings clients send that no engine applies, and when a sent value asks for them.

SillyTavern sends every one of them with its neutral value in each request; only a value that
asks for the sampler is named in ``X-Serval-Unsupported-Params``."""


def not_applied(data: dict[str, Any]) -> tuple[str, ...]:
    """The settings of the raw request ``data`` that ask for something no engine does."""
    names = [name for name, asks in NOT_APPLIED.items() if name in data and asks(data[name])]
    if "adaptive_target" in names and "adaptive_decay" in data:
        names.append("adaptive_decay")
    return tuple(names)


class SamplerRequest(BaseModel):
    """Sampler fields of a generation request, with TabbyAPI's and Kobold's names as aliases."""

    model_config = ConfigDict(
        populate_by_name=True, allow_inf_nan=False, extra="ignore", validate_default=False
    )

    max_tokens: int | None = Field(
        None,
        ge=0,
        le=10_000_000,
        validation_alias=_aliases("max_tokens", "max_completion_tokens", "max_length"),
        description="Most tokens to generate (absent or 0: fill the context).",
    )
    min_tokens: int | None = Field(
        None,
        ge=0,
        validation_alias=_aliases("min_tokens", "min_length"),
        description="Tokens generated before EOS may end the text.",
    )
    stop: list[str | int] | None = Field(
        None,
        validation_alias=_aliases("stop", "stop_sequence"),
        description="Stop strings, or token ids (ints).",
    )
    banned_strings: list[str] | None = Field(
        None, description="Strings the output never contains (the engine backtracks)."
    )
    banned_tokens: list[int] | None = Field(
        None,
        validation_alias=_aliases("banned_tokens", "custom_token_bans"),
        description="Token ids never sampled (a list or a comma-separated string).",
    )
    allowed_tokens: list[int] | None = Field(
        None,
        validation_alias=_aliases("allowed_tokens", "allowed_token_ids"),
        description="If set, only these token ids may be sampled.",
    )
    token_healing: bool | None = Field(None, description="Regenerate the prompt's last token.")
    temperature: float | None = Field(None, ge=0, le=10, description="0: greedy.")
    temperature_last: bool | None = Field(
        None, description="Apply temperature after the truncation samplers."
    )
    smoothing_factor: float | None = Field(None, ge=0, description="Quadratic sampling.")
    top_k: int | None = Field(None, ge=-1, description="0 or -1: off.")
    top_p: float | None = Field(None, ge=0, le=1)
    top_a: float | None = Field(None, ge=0, le=1)
    min_p: float | None = Field(None, ge=0, le=1)
    tfs: float | None = Field(None, ge=0, le=1, description="Tail-free sampling (1: off).")
    top_n_sigma: float | None = Field(
        None,
        ge=0,
        le=100,
        validation_alias=_aliases("top_n_sigma", "nsigma"),
        description="Top-nσ: keep tokens whose logit is within n standard deviations of the "
        "largest (0: off).",
    )
    typical: float | None = Field(
        None,
        gt=0,
        le=1,
        validation_alias=_aliases("typical", "typical_p"),
        description="Locally typical sampling (1: off).",
    )
    skew: float | None = Field(None, ge=-10, le=10)
    xtc_probability: float | None = Field(None, ge=0, le=1, description="XTC (0: off).")
    xtc_threshold: float | None = Field(None, ge=0, le=1)
    mirostat_mode: Literal[0, 1, 2] | None = Field(
        None, validation_alias=_aliases("mirostat_mode", "mirostat")
    )
    mirostat_tau: float | None = Field(None, ge=0, le=20)
    mirostat_eta: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(
        None, gt=0, le=10, validation_alias=_aliases("repetition_penalty", "rep_pen")
    )
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    penalty_range: int | None = Field(
        None,
        ge=-1,
        validation_alias=_aliases(
            "penalty_range", "repetition_range", "repetition_penalty_range", "rep_pen_range"
        ),
        description="Tokens back the penalties look (-1 or 0: the whole context for the "
        "repetition penalty, the generated text for frequency and presence).",
    )
    repetition_decay: int | None = Field(None, ge=0)
    repetition_penalty_slope: float | None = Field(
        None,
        ge=0,
        le=10,
        validation_alias=_aliases("repetition_penalty_slope", "rep_pen_slope"),
        description="Kobold's slope: in (0, 1), the older half of the range gets this share of "
        "the repetition penalty (0 or 1: flat).",
    )
    dry_multiplier: float | None = Field(None, ge=0, le=100, description="DRY (0: off).")
    dry_base: float | None = Field(None, ge=1, le=10)
    dry_allowed_length: int | None = Field(None, ge=1, le=1000)
    dry_range: int | None = Field(
        None,
        ge=-1,
        validation_alias=_aliases("dry_range", "dry_penalty_last_n"),
        description="Tokens back DRY looks for repeats (0 or -1: the whole context).",
    )
    dry_sequence_breakers: list[str] | None = Field(
        None,
        max_length=128,
        description="Strings that break DRY sequences: a list, JSON text or quoted CSV.",
    )
    min_temp: float | None = Field(
        None, ge=0, le=10, validation_alias=_aliases("min_temp", "dynatemp_low")
    )
    max_temp: float | None = Field(
        None, ge=0, le=10, validation_alias=_aliases("max_temp", "dynatemp_high")
    )
    temp_exponent: float | None = Field(
        None, ge=0, le=10, validation_alias=_aliases("temp_exponent", "dynatemp_exponent")
    )
    add_bos_token: bool | None = Field(None, description="Default: what the tokenizer does.")
    ban_eos_token: bool | None = Field(
        None, validation_alias=_aliases("ban_eos_token", "ignore_eos")
    )
    logit_bias: dict[str, float] | None = Field(
        None, description="Token id (as a string) -> bias added to its logit (-100..100)."
    )
    seed: int | None = Field(
        None,
        ge=-(2**63),
        le=2**63 - 1,
        validation_alias=_aliases("seed", "sampler_seed"),
        description="Same seed and settings give the same text; negative (-1): a random seed.",
    )
    cfg_scale: float | None = Field(
        None,
        gt=0,
        le=100,
        validation_alias=_aliases("cfg_scale", "guidance_scale"),
        description="Classifier-free guidance (1: off): each token is sampled from "
        "neg + cfg_scale * (pos - neg), the log-probabilities after the prompt (pos) and after "
        "negative_prompt (neg).",
    )
    negative_prompt: str | None = Field(
        None,
        description="The text CFG steers away from, as the model reads it (never templated); "
        "absent or empty: the BOS token alone.",
    )
    json_schema: dict[str, Any] | None = Field(None, description="Constrain output to a schema.")
    regex_pattern: str | None = Field(None, description="Constrain output to a regex.")
    grammar_string: str | None = Field(
        None,
        validation_alias=_aliases("grammar_string", "grammar"),
        description="Constrain output to a Lark grammar (GBNF when it contains '::=').",
    )

    _not_applied: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _record_not_applied(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        request = handler(data)
        if isinstance(data, dict) and isinstance(request, SamplerRequest):
            request._not_applied = not_applied(data)
        return request

    @property
    def not_applied(self) -> tuple[str, ...]:
        """Settings this request asked for that no engine applies (see :data:`NOT_APPLIED`)."""
        return self._not_applied

    def naming_not_applied(self, source: SamplerRequest) -> None:
        """Name what ``source`` asked for that no engine applies: for a request translated from
        another API's body, whose raw fields it never saw."""
        self._not_applied = source.not_applied

    @field_validator("stop", "banned_strings", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _string_list(value)

    @field_validator("banned_tokens", "allowed_tokens", mode="before")
    @classmethod
    def _token_lists(cls, value: Any) -> Any:
        return _csv_ints(value)

    @field_validator("seed", mode="after")
    @classmethod
    def _negative_seed_is_random(cls, value: int | None) -> int | None:
        return None if value is not None and value < 0 else value

    @field_validator("top_k", "dry_range", mode="after")
    @classmethod
    def _minus_one_is_zero(cls, value: int | None) -> int | None:
        """top_k off, and dry_range over the whole context (llama.cpp's -1), are 0 here."""
        return 0 if value == -1 else value

    @field_validator("dry_sequence_breakers", mode="before")
    @classmethod
    def _breakers(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:
            return []
        if not text.startswith("["):
            text = f"[{text}]"
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("expected a list of strings, as JSON or quoted CSV") from None
        return parsed

    @field_validator("logit_bias", mode="after")
    @classmethod
    def _bias_keys(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        for key, bias in value.items():
            if not key.lstrip("-").isdigit() or int(key) < 0:
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"logit_bias values must be within -100..100, got {bias}")
        return value


def kobold_sampler_order(ids: list[int]) -> tuple[str, ...]:
    """Kobold's ``sampler_order`` (0 top_k, 1 top_a, 2 top_p, 3 tfs, 4 typical, 5 temperature,
    6 repetition penalty) as step names for :attr:`SamplingParams.sampler_order`."""
    names = []
    for sampler_id in ids:
        if not 0 <= sampler_id < len(KOBOLD_SAMPLERS):
            raise BadRequestError(
                f"Unknown sampler id {sampler_id} in sampler_order (0..6 are known).",
                param="sampler_order",
            )
        names.append(KOBOLD_SAMPLERS[sampler_id])
    return tuple(dict.fromkeys(names))


PARAM_NAMES = frozenset(f.name for f in fields(SamplingParams))
LIST_PARAMS = frozenset(
    {"stop", "banned_strings", "banned_tokens", "allowed_tokens", "dry_sequence_breakers"}
)


class OverrideEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    override: Any
    force: bool = False
    additive: bool = False


class OverridePreset(BaseModel):
    """A sampler override preset: ``param -> {override, force, additive}``."""

    name: str | None = None
    entries: dict[str, OverrideEntry] = {}

    @classmethod
    def from_mapping(
        cls, data: dict[str, Any], name: str | None = None, strict: bool = True
    ) -> OverridePreset:
        """Validate a preset. ``strict`` refuses unknown samplers; preset files (which may come
        from TabbyAPI with samplers Serval lacks) skip them with a warning instead."""
        entries: dict[str, OverrideEntry] = {}
        probe = SamplerRequest.model_fields
        for key, raw in data.items():
            if key not in probe:
                if not strict:
                    logger.warning(f"sampler preset {name!r}: unknown sampler {key!r} skipped")
                    continue
                raise BadRequestError(f"Unknown sampler in preset: {key!r}", param=key)
            # {override, force, additive}, or a bare value as shorthand for {override: value}.
            is_entry = isinstance(raw, dict) and "override" in raw
            try:
                entry = OverrideEntry.model_validate(raw if is_entry else {"override": raw})
                SamplerRequest.model_validate({key: entry.override})
            except ValueError as exc:
                raise BadRequestError(
                    f"Bad value for {key!r} in preset: {exc}", param=key
                ) from None
            entries[key] = entry
        return cls(name=name, entries=entries)


def _safe_preset_path(name: str, directory: Path) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise BadRequestError(f"Invalid preset name: {name!r}", param="preset")
    return safe_child(directory, f"{name}.yml", what="preset name", param="preset")


def list_presets(directory: Path = PRESET_DIR) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(path.stem for path in directory.glob("*.yml"))


def load_preset(name: str, directory: Path = PRESET_DIR) -> OverridePreset:
    path = _safe_preset_path(name, directory)
    if not path.is_file():
        raise NotFoundError(f"Sampler preset {name!r} not found.", param="preset")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise BadRequestError(f"Sampler preset {name!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequestError(f"Sampler preset {name!r} must be a mapping of samplers.")
    return OverridePreset.from_mapping(data, name=name, strict=False)


class OverrideState:
    """The override preset in effect (global to the server, switched by admins)."""

    def __init__(self) -> None:
        self.preset = OverridePreset()

    def set(self, preset: OverridePreset) -> None:
        self.preset = preset

    def clear(self) -> None:
        self.preset = OverridePreset()


def _to_param(name: str, value: Any) -> Any:
    if name == "logit_bias":
        return tuple((int(key), float(bias)) for key, bias in (value or {}).items())
    if name in LIST_PARAMS:
        return tuple(value)
    if name == "max_tokens" and value == 0:
        return None
    return value


def resolve(request: SamplerRequest, preset: OverridePreset | None = None) -> SamplingParams:
    """Apply ``preset`` to ``request`` and return concrete settings."""
    sent = {name: value for name, value in request if value is not None and name in PARAM_NAMES}
    for name, entry in (preset.entries if preset else {}).items():
        if name not in PARAM_NAMES:
            continue
        value = SamplerRequest.model_validate({name: entry.override}).__dict__[name]
        if entry.force:
            sent[name] = value
        elif entry.additive and name in LIST_PARAMS:
            sent[name] = list(value) + list(sent.get(name) or [])
        elif entry.additive and name == "logit_bias":
            sent[name] = {**value, **(sent.get(name) or {})}
        else:
            sent.setdefault(name, value)
    return SamplingParams(
        **{name: _to_param(name, value) for name, value in sent.items()},
        not_applied=request.not_applied,
    )
