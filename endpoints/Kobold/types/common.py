"""Shapes of the Kobold info, token and soft-prompt routes, and the base of every Kobold model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class KoboldModel(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, extra="ignore")


class ValueResponse(KoboldModel):
    value: int


class ResultResponse(KoboldModel):
    result: str


class VersionResponse(KoboldModel):
    """What KoboldCpp answers on /api/extra/version; clients enable features by ``version``."""

    result: str = "KoboldCpp"
    version: str
    protected: bool = Field(description="A key is needed.")
    txt2img: bool = False
    vision: bool = False
    transcribe: bool = False


class TokenCountRequest(KoboldModel):
    prompt: str
    special: bool = Field(True, description="Add the model's BOS token as generation would.")


class TokenCountResponse(KoboldModel):
    value: int = Field(description="Number of tokens.")
    ids: list[int]


class SoftPromptList(KoboldModel):
    values: list[str] = []


class SoftPrompt(KoboldModel):
    value: str = ""


class SoftPromptChoice(KoboldModel):
    """What a client sets: the Horde worker clears it with ``{"value": null}``."""

    value: str | None = None


class PerfResponse(KoboldModel):
    """KoboldCpp's /api/extra/perf: the last generation's timings and the server's load."""

    last_process: float = Field(0.0, description="Seconds the last prompt took to process.")
    last_eval: float = Field(0.0, description="Seconds the last text took to generate.")
    last_token_count: int = Field(0, description="Tokens the last generation produced.")
    last_seed: int = Field(-1, description="Seed of the last generation (-1: random).")
    total_gens: int = Field(0, description="Generations finished since start.")
    stop_reason: int = Field(
        -1, description="-1 none yet, 0 token limit, 1 end-of-sequence token, 2 stop string."
    )
    total_img_gens: int = 0
    queue: int = Field(0, description="Jobs waiting for the engine.")
    idle: int = Field(1, description="1 when no job runs.")
    hordeexitcounter: int = -1
    uptime: float = Field(description="Seconds since the server started.")
    idletime: float = Field(description="Seconds since the last generation ended.")
    quiet: bool = False
