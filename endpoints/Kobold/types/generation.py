"""Request and response shapes of the Kobold generation routes (KoboldAI United / KoboldCpp)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from backends.sampling import KOBOLD_SAMPLERS
from common.sampling import SamplerRequest, kobold_sampler_order
from endpoints.Kobold.types.common import KoboldModel
from endpoints.OAI.types.chat import ChatChoiceLogprobs

DEFAULT_MAX_LENGTH = 200  # KoboldCpp's and Kobold Lite's default max_length
GENKEY_MAX_LENGTH = 128
KOBOLD_TOP_LOGPROBS = 5  # KoboldCpp's fixed number of alternatives per token
SamplerId = Annotated[int, Field(ge=0, le=len(KOBOLD_SAMPLERS) - 1)]


class GenerateRequest(SamplerRequest):
    """A Kobold generation: the shared sampler fields (Kobold names are aliases) and Kobold's own.

    Fields Kobold clients send that Serval has no use for (``quiet``, ``use_story``,
    ``render_special``, ...) are ignored; ``images`` (KoboldCpp's) is refused unless empty.
    """

    prompt: str = Field(description="The text to continue.")
    images: list[Any] | None = Field(
        None,
        description="KoboldCpp's base64 images: not taken here (a 400 unless empty); a chat "
        "with image parts to a vision model is how images are sent.",
    )
    memory: str = Field(
        "",
        description="Text put before the prompt and kept when the prompt is truncated (KoboldCpp).",
    )
    max_context_length: int | None = Field(
        None,
        ge=2,
        description="Context size to fit in: the prompt is cut from the left to leave room for "
        "max_length new tokens (at most the model's context length).",
    )
    n: int = Field(1, ge=1, description="Texts to generate, each its own job.")
    genkey: str | None = Field(
        None,
        min_length=1,
        max_length=GENKEY_MAX_LENGTH,
        description="Names this generation for /api/extra/generate/check and /api/extra/abort "
        "(only the key that started it can use it). Default: a new id.",
    )
    trim_stop: bool = Field(
        False, description="Leave the stop sequence that ended the text out of it."
    )
    logprobs: bool = Field(
        False,
        description=f"Return each token's log probability and its {KOBOLD_TOP_LOGPROBS} likeliest "
        "alternatives with the results (and at /api/extra/last_logprobs), as KoboldCpp does.",
    )
    use_default_badwordsids: bool | None = Field(
        None, description="Ban the EOS token (same as ban_eos_token)."
    )
    dynatemp_range: float | None = Field(
        None,
        ge=0,
        le=10,
        description="Dynamic temperature: min_temp and max_temp = temperature -/+ this range.",
    )
    kobold_sampler_order: list[SamplerId] | None = Field(
        None,
        validation_alias="sampler_order",
        max_length=64,
        description="Kobold sampler ids in the order to apply them: 0 top_k, 1 top_a, 2 top_p, "
        "3 tfs, 4 typical, 5 temperature, 6 rep_pen.",
    )

    @model_validator(mode="before")
    @classmethod
    def _kobold_fields(cls, data: Any) -> Any:
        """Kobold's ``banned_tokens`` are phrases (strings); ints among them are token ids."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        banned = data.get("banned_tokens")
        if isinstance(banned, list):
            phrases = [item for item in banned if isinstance(item, str)]
            data["banned_tokens"] = [item for item in banned if not isinstance(item, str)]
            if phrases:
                data["banned_strings"] = [*(data.get("banned_strings") or []), *phrases]
        stops = data.get("stop_sequence")
        if isinstance(stops, list):
            data["stop_sequence"] = [stop for stop in stops if stop not in (None, "")]
        return data

    @model_validator(mode="after")
    def _shared_names(self) -> GenerateRequest:
        """Kobold's spelling of the EOS ban (``sampler_seed`` is an alias of the shared seed)."""
        if self.ban_eos_token is None and self.use_default_badwordsids is not None:
            self.ban_eos_token = self.use_default_badwordsids
        return self

    def sampler_names(self) -> tuple[str, ...] | None:
        """``sampler_order`` as step names of ``SamplingParams.sampler_order``, each once."""
        if self.kobold_sampler_order is None:
            return None
        return kobold_sampler_order(self.kobold_sampler_order)


class GenkeyRequest(KoboldModel):
    genkey: str | None = Field(
        None, max_length=GENKEY_MAX_LENGTH, description="Default: the caller's generations."
    )


class GenerationResult(KoboldModel):
    text: str
    finish_reason: Literal["stop", "length", "abort"] | None = Field(
        None, description="stop: EOS or a stop sequence; length: max_length; abort: aborted."
    )
    prompt_tokens: int | None = Field(None, description="Prompt tokens after truncation.")
    completion_tokens: int | None = None
    logprobs: ChatChoiceLogprobs | None = Field(
        None, description="With ``logprobs``: OpenAI's chat logprobs object, as KoboldCpp sends."
    )


class GenerateResponse(KoboldModel):
    results: list[GenerationResult]


class StreamEvent(KoboldModel):
    """The data of one ``event: message`` of /api/extra/generate/stream."""

    token: str
    finish_reason: Literal["stop", "length", "abort", "error"] | None = None


class LogprobsResponse(KoboldModel):
    logprobs: ChatChoiceLogprobs | None = Field(
        None, description="The generation's logprobs; null when it did not ask for them."
    )


class AbortResponse(KoboldModel):
    success: bool = Field(description="True when a running generation was stopped.")
    done: bool = Field(True, description="The stopped generations have ended.")
