"""Request and response shapes of the admin and utility routes (TabbyAPI's core API)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, RootModel

from common.downloads import DownloadProgress
from endpoints.OAI.types.chat import ChatMessage


class ModelCardParameters(BaseModel):
    max_seq_len: int | None = None
    cache_size: int | None = None
    cache_mode: str | None = None
    rope_scale: float | None = None
    rope_alpha: float | None = None
    max_batch_size: int | None = None
    chunk_size: int | None = None
    prompt_template: str | None = None
    prompt_template_content: str | None = None
    backend: str | None = None
    dtype: str | None = None
    device: str | None = None
    draft: str | None = None
    loras: list[str] = []
    use_vision: bool = Field(False, description="The vision part is loaded: chats take images.")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "serval"
    max_model_len: int | None = Field(None, description="Context length in tokens.")
    parameters: ModelCardParameters | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class DraftLoadRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True, allow_inf_nan=False)

    draft_model_name: str = Field(validation_alias=AliasChoices("draft_model_name", "name"))
    draft_mode: Literal["model", "ngram", "disabled"] | None = None
    draft_rope_scale: float | None = Field(None, gt=0)
    draft_rope_alpha: float | Literal["auto"] | None = None
    draft_cache_mode: str | None = None
    draft_gpu_split: list[float] | None = None
    draft_num_tokens: int | None = Field(None, ge=1, le=8)


class ModelLoadRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True, allow_inf_nan=False, protected_namespaces=())

    model_name: str = Field(
        validation_alias=AliasChoices("model_name", "name"),
        min_length=1,
        description="Folder under model_dir (sub-paths allowed).",
    )
    backend: Literal["auto", "exllamav2", "exllamav3", "llamacpp", "transformers"] | None = None
    max_seq_len: int | None = Field(None, ge=-1)
    cache_size: int | None = Field(None, ge=0)
    cache_mode: str | None = None
    max_batch_size: int | None = Field(None, ge=1, le=1024)
    chunk_size: int | None = Field(None, ge=256)
    rope_scale: float | None = Field(None, gt=0)
    rope_alpha: float | Literal["auto"] | None = None
    gpu_split_auto: bool | None = None
    autosplit_reserve: list[float] | None = None
    gpu_split: list[float] | None = None
    tensor_parallel: bool | None = None
    dtype: Literal["auto", "bfloat16", "float16", "float32"] | None = None
    prompt_template: str | None = None
    vision: bool | None = Field(None, description="Load the vision part of a vision model.")
    draft_model: DraftLoadRequest | None = Field(
        None, validation_alias=AliasChoices("draft_model", "draft")
    )
    skip_queue: bool = Field(False, description="Cancel running jobs instead of waiting for them.")


class LoadProgressEvent(BaseModel):
    model_type: str
    module: int
    modules: int
    status: Literal["processing", "finished"]


class TokenEncodeRequest(BaseModel):
    text: str | list[ChatMessage] = Field(description="Text, or chat messages to template first.")
    add_bos_token: bool = True
    encode_special_tokens: bool = True
    decode_special_tokens: bool = True


class TokenEncodeResponse(BaseModel):
    tokens: list[int]
    length: int


class TokenDecodeRequest(BaseModel):
    tokens: list[int]
    add_bos_token: bool = True
    encode_special_tokens: bool = True
    decode_special_tokens: bool = True


class TokenDecodeResponse(BaseModel):
    text: str


class PermissionResponse(BaseModel):
    permission: Literal["admin", "api"]


class HealthResponse(BaseModel):
    status: Literal["healthy", "unhealthy"]
    issues: list[str] = []


class Props(BaseModel):
    total_slots: int
    chat_template: str
    default_generation_settings: dict[str, Any]


class NameList(BaseModel):
    object: Literal["list"] = "list"
    data: list[str]


class TemplateSwitchRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    prompt_template_name: str = Field(
        validation_alias=AliasChoices("prompt_template_name", "name"), min_length=1
    )


class OverrideSwitchRequest(BaseModel):
    preset: str | None = None
    overrides: dict[str, Any] | None = None


class OverrideListResponse(BaseModel):
    selected_preset: str | None
    overrides: dict[str, Any]
    presets: list[str]


class LoraCard(BaseModel):
    id: str = Field(description="Folder under lora_dir.")
    object: Literal["lora"] = "lora"
    created: int
    owned_by: str = "serval"
    scaling: float | None = Field(None, description="Scaling in use; null for a LoRA not in use.")


class LoraList(BaseModel):
    object: Literal["list"] = "list"
    data: list[LoraCard]


class LoraSpec(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    name: str = Field(min_length=1, description="Folder under lora_dir (sub-paths allowed).")
    scaling: float = Field(1.0, ge=0, le=100, description="Multiplier of the LoRA's effect.")


class LoraLoadRequest(BaseModel):
    loras: list[LoraSpec] = Field(description="LoRAs to use; the ones in use are replaced.")
    skip_queue: bool = Field(False, description="Cancel running jobs instead of waiting for them.")


class LoraLoadResponse(BaseModel):
    success: list[str]
    failure: list[str]


class LoraUnloadRequest(BaseModel):
    skip_queue: bool = Field(False, description="Cancel running jobs instead of waiting for them.")


class EmbeddingModelParameters(BaseModel):
    dimensions: int = Field(description="Length of each vector.")
    max_seq_len: int = Field(description="Tokens per text; longer texts are truncated.")
    device: str
    matryoshka: bool = Field(description="Whether `dimensions` may ask for shorter vectors.")


class EmbeddingModelCard(ModelCard):
    parameters: EmbeddingModelParameters | None = None  # type: ignore[assignment]


class EmbeddingLoadRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())

    embedding_model_name: str = Field(
        validation_alias=AliasChoices("embedding_model_name", "name"),
        min_length=1,
        description="Folder under embedding_model_dir.",
    )
    embeddings_device: Literal["cpu", "auto", "cuda"] | None = Field(
        None, description="Device (default: embeddings.embeddings_device)."
    )


class DownloadRequest(BaseModel):
    """TabbyAPI's download body; other keys (SillyTavern sends its own) are ignored."""

    repo_id: str = Field(min_length=1, max_length=256, description="owner/name on the hub")
    repo_type: Literal["model", "lora"] = Field(
        "model", description="model: saved in model_dir; lora: saved in lora_dir"
    )
    folder_name: str | None = Field(
        None, max_length=255, description="Folder to create (default: the repo's name)."
    )
    revision: str | None = Field(None, max_length=256, description="Branch, tag or commit.")
    token: str | None = Field(None, max_length=1024, description="Hub token for private repos.")
    include: list[str] = Field(default_factory=list, max_length=64, description="Glob patterns.")
    exclude: list[str] = Field(default_factory=list, max_length=64, description="Glob patterns.")
    stream: bool = Field(False, description="Stream progress as SSE instead of waiting.")


class DownloadProgressEvent(RootModel[DownloadProgress]):
    """One step of a streamed download: its :class:`DownloadProgress` record, as JSON."""


class DownloadResponse(BaseModel):
    download_path: str
