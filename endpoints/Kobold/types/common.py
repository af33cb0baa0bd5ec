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
