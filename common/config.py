"""Serval's configuration: TabbyAPI's sections and keys, read from YAML, environment and CLI.

Sources, later wins: ``config.yml`` (or ``--config PATH``), environment variables
``SERVAL_<SECTION>_<KEY>``, then command-line flags ``--<key-with-hyphens>``. The result is one
frozen :class:`ServalConfig` that is passed to whoever needs it; nothing else reads the file or
the environment.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

ENV_PREFIX = "SERVAL_"
# The default models' folders, as scripts/fetch_default_model.py writes them: the language model
# as a HF folder and as its GGUF file as shipped, and the embedding model.
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_GGUF_MODEL_NAME = "SmolLM2-135M-Instruct-GGUF"
DEFAULT_EMBEDDING_MODEL_NAME = "all-MiniLM-L6-v2"


class ConfigError(Exception):
    """A configuration problem, reported to the user as one line."""


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", validate_default=True)


class NetworkConfig(Section):
    host: str = Field(
        "127.0.0.1", description="Address to listen on (0.0.0.0 for every interface)."
    )
    port: int = Field(5000, ge=1, le=65535, description="Port to listen on.")
    disable_auth: bool = Field(
        False, description="Turn API key checks off: every caller is an admin. Never on a network."
    )
    disable_fetch_requests: bool = Field(
        False, description="Refuse to fetch remote URLs named in requests (images)."
    )
    allow_private_image_urls: bool = Field(
        False,
        description="Fetch image URLs that lead to loopback, private or link-local addresses "
        "(off: only public addresses are fetched).",
    )
    send_tracebacks: bool = Field(
        False, description="Include Python tracebacks in error responses (for debugging only)."
    )
    api_servers: list[Literal["OAI", "Kobold"]] = Field(
        ["OAI", "Kobold"],
        description="API families to serve: OAI (OpenAI), Kobold. The admin API is always on.",
    )
    sse_ping_interval: float = Field(
        15.0, ge=0, description="Seconds between keep-alive comments in SSE streams (0: none)."
    )
    cors_origins: list[str] | None = Field(
        None,
        description="Browser origins allowed to call the API (CORS). null: any origin while keys "
        "are needed, only loopback pages with disable_auth; a list: those; []: CORS off.",
    )
    max_body_size: int = Field(
        10 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes."
    )
    body_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a client may take to send a whole request body (slow senders): 408.",
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client may take to send a request's headers; then it is closed.",
    )
    max_connections: int = Field(
        512,
        ge=1,
        description="Open connections and running requests before new requests get 503.",
    )
    max_concurrent_requests: int = Field(
        0,
        ge=0,
        description="Generation requests running at once before others queue (0: as many as "
        "the loaded engine batches together, its max_batch_size).",
    )
    max_queued_requests: int = Field(
        64,
        ge=0,
        description="Generation requests allowed to wait for a slot; beyond it: 429 (0: no limit).",
    )
    key_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Largest share of the running slots, and of the queue, that one API key may "
        "hold (waiting keys take turns for free slots; 1: no per-key limit).",
    )
    stream_send_timeout: float = Field(
        30.0,
        ge=0,
        description="Seconds a stream may wait on a client that does not read it (its send "
        "buffers full) before the stream is closed and its generation cancelled (0: no limit).",
    )
    web_console: bool = Field(True, description="Serve the web console at /.")
    metrics_auth: Literal["none", "api", "admin"] = Field(
        "api", description="Key level needed to read /metrics."
    )

    @field_validator("api_servers", mode="before")
    @classmethod
    def _normalise_api_servers(cls, value: Any) -> Any:
        names = {"oai": "OAI", "kobold": "Kobold"}
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [names.get(str(item).lower(), item) for item in value]
        return value


class LoggingConfig(Section):
    log_level: Literal["trace", "debug", "info", "warning", "error"] = Field(
        "info", description="Console log level."
    )
    log_prompt: bool = Field(False, description="Log the full prompt of every request.")
    log_generation_params: bool = Field(False, description="Log the sampler settings of requests.")
    log_requests: bool = Field(
        False, description="Log the body of every request (keys are never logged)."
    )


class ModelConfig(Section):
    model_dir: str = Field("models", description="Folder holding model folders.")
    inline_model_loading: bool = Field(
        False, description="Let admin keys load the model named in a request's `model` field."
    )
    use_dummy_models: bool = Field(False, description="List dummy_model_names in /v1/models.")
    dummy_model_names: list[str] = Field(
        ["gpt-3.5-turbo"], description="Model names that are accepted and mean the loaded model."
    )
    model_name: str | None = Field(
        DEFAULT_MODEL_NAME,
        description="Model folder (under model_dir) to load at start-up. With backend auto and "
        f"no GPU, {DEFAULT_MODEL_NAME} is served from its GGUF file on llama.cpp where that runs.",
    )
    use_as_default: list[str] = Field(
        [], description="Keys of this section used as defaults for loads over the API."
    )
    backend: Literal["auto", "exllamav2", "exllamav3", "llamacpp", "transformers"] = Field(
        "auto",
        description="Engine: auto picks llamacpp for a GGUF file, exllamav3 for EXL3, "
        "exllamav2 on CUDA, transformers else.",
    )
    max_seq_len: int | None = Field(
        None, ge=-1, description="Context length (default and -1: the model's own)."
    )
    cache_size: int | None = Field(
        None, ge=0, description="K/V cache size in tokens, a multiple of 256 (default max_seq_len)."
    )
    cache_mode: str = Field("FP16", description="K/V cache precision: FP16, Q8, Q6 or Q4.")
    tensor_parallel: bool = Field(False, description="Load with tensor parallelism (GPU engines).")
    gpu_split_auto: bool = Field(True, description="Split the model across GPUs automatically.")
    autosplit_reserve: list[float] = Field([96], description="MB kept free per GPU in autosplit.")
    gpu_split: list[float] = Field([], description="GB per GPU for a manual split.")
    rope_scale: float = Field(1.0, gt=0, description="Linear RoPE scaling (compress_pos_emb).")
    rope_alpha: float | Literal["auto"] | None = Field(
        None, description="NTK RoPE alpha, or auto from the context length."
    )
    chunk_size: int = Field(2048, ge=256, description="Prompt tokens processed per forward pass.")
    max_batch_size: int | None = Field(
        None, ge=1, description="Most sequences generated at once (default: engine's choice)."
    )
    prompt_template: str | None = Field(
        None, description="Chat template: a file in templates/ or a named model template."
    )
    vision: bool = Field(False, description="Load the vision tower if the model has one.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights dtype for the transformers engine (auto: bf16 where fast)."
    )
    template_vars_default: dict[str, Any] = Field(
        {}, description="Template variables used unless a request sets them."
    )
    template_vars_force: dict[str, Any] = Field(
        {}, description="Template variables that override what a request sets."
    )
    reasoning: bool = Field(False, description="Split output into reasoning_content and content.")
    reasoning_start_token: str = Field("<think>", description="Text that opens a reasoning block.")
    reasoning_end_token: str = Field("</think>", description="Text that closes a reasoning block.")
    reasoning_budget_tokens: int | None = Field(
        None, description="Most reasoning tokens before the block is closed (None: no limit)."
    )
    tool_format: str | None = Field(
        None,
        description="Tool-call format: hermes, llama3, mistral or mistral_args (default: read "
        "from the chat template; hermes when it names none).",
    )


class DraftModelConfig(Section):
    draft_model_dir: str = Field("models", description="Folder holding draft model folders.")
    draft_model_name: str | None = Field(None, description="Draft model for speculative decoding.")
    draft_mode: Literal["model", "ngram", "disabled"] = Field(
        "model", description="model: a draft model; ngram: prompt-lookup drafting."
    )
    draft_rope_scale: float = Field(1.0, gt=0, description="Linear RoPE scaling of the draft.")
    draft_rope_alpha: float | Literal["auto"] | None = Field(
        None, description="NTK RoPE alpha of the draft, or auto."
    )
    draft_cache_mode: str = Field("FP16", description="Draft K/V cache precision.")
    draft_gpu_split: list[float] = Field([], description="GB per GPU for the draft model.")
    draft_num_tokens: int = Field(4, ge=1, le=8, description="Tokens drafted per step.")


class LoraEntry(Section):
    name: str
    scaling: float = Field(1.0, ge=0)


class LoraConfig(Section):
    lora_dir: str = Field("loras", description="Folder holding LoRA folders.")
    loras: list[LoraEntry] = Field([], description="LoRAs loaded at start-up: [{name, scaling}].")


class EmbeddingsConfig(Section):
    embedding_model_dir: str = Field("models", description="Folder holding embedding models.")
    embeddings_device: Literal["cpu", "auto", "cuda"] = Field(
        "cpu", description="Device for the embedding model."
    )
    embedding_model_name: str | None = Field(
        DEFAULT_EMBEDDING_MODEL_NAME, description="Embedding model loaded at start-up."
    )


class SamplingConfig(Section):
    override_preset: str | None = Field(
        None, description="Sampler override preset (a file in sampler_overrides/) to apply."
    )


class LimitsConfig(Section):
    max_n: int = Field(16, ge=1, description="Largest `n` (choices per request).")
    max_prompts: int = Field(32, ge=1, description="Most prompts in one completion request.")
    max_tokens: int = Field(0, ge=0, description="Cap on max_tokens per request (0: the context).")
    max_logprobs: int = Field(20, ge=0, description="Largest logprobs / top_logprobs.")
    max_stop: int = Field(16, ge=0, description="Most stop strings or tokens per request.")
    max_stop_length: int = Field(256, ge=1, description="Longest stop or banned string.")
    template_timeout: float = Field(
        2.0, gt=0, description="Seconds a chat template may take to render."
    )
    grammar_max_chars: int = Field(
        200_000,
        ge=1,
        le=1_000_000,
        description="Longest grammar, regex or JSON schema (as JSON text), in characters.",
    )
    grammar_max_rules: int = Field(
        2_000,
        ge=1,
        le=20_000,
        description="Most rules in a grammar (Lark/GBNF rules; subschemas of a JSON schema).",
    )
    grammar_max_depth: int = Field(
        64, ge=1, le=500, description="Deepest nesting of a JSON schema or of groups in a regex."
    )
    grammar_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds compiling a request's grammar (and building its matcher) may take.",
    )
    max_messages: int = Field(1024, ge=1, description="Most chat messages in one request.")
    max_tools: int = Field(128, ge=0, description="Most tools (and functions) in one request.")
    max_json_depth: int = Field(
        64, ge=2, description="Deepest nesting of arrays and objects in a request body."
    )
    max_json_values: int = Field(
        262_144, ge=1024, description="Most JSON values (of any kind) in one request body."
    )
    max_json_objects: int = Field(
        16_384, ge=64, description="Most JSON objects ({...}) in one request body."
    )
    max_chars_per_token: int = Field(
        32,
        ge=1,
        description="Characters per token assumed at most: a text longer than the context times "
        "this is refused (or cut, for Kobold) before it is tokenized.",
    )
    responses_stored: int = Field(
        256,
        ge=0,
        le=100_000,
        description="Most answers of /v1/responses kept for previous_response_id and GET "
        "(the oldest go first; 0: none are kept).",
    )
    responses_ttl: float = Field(
        3600.0, gt=0, description="Seconds a stored /v1/responses answer is kept."
    )
    max_images: int = Field(8, ge=0, le=256, description="Most images in one chat request.")
    max_image_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Largest image file (decoded or fetched), in bytes."
    )
    max_image_pixels: int = Field(
        16_777_216,
        ge=1,
        le=178_956_970,
        description="Most pixels (width x height) in one image; larger ones are refused unread.",
    )
    image_fetch_timeout: float = Field(
        10.0, gt=0, le=300, description="Seconds fetching one image URL may take in all."
    )
    image_fetch_redirects: int = Field(
        3, ge=0, le=10, description="Most redirects followed when fetching an image URL."
    )


class DeveloperConfig(Section):
    unsafe_launch: bool = Field(False, description="Skip dependency checks at start-up.")
    disable_request_streaming: bool = Field(False, description="Answer every request unstreamed.")
    realtime_process_priority: bool = Field(False, description="Raise the process priority.")


class ServalConfig(BaseModel):
    """Every setting of the server, grouped in TabbyAPI's sections."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    network: NetworkConfig = NetworkConfig()
    logging: LoggingConfig = LoggingConfig()
    model: ModelConfig = ModelConfig()
    draft_model: DraftModelConfig = DraftModelConfig()
    lora: LoraConfig = LoraConfig()
    embeddings: EmbeddingsConfig = EmbeddingsConfig()
    sampling: SamplingConfig = SamplingConfig()
    limits: LimitsConfig = LimitsConfig()
    developer: DeveloperConfig = DeveloperConfig()


def sections() -> dict[str, type[Section]]:
    """Section name -> its model, in file order."""
    return {
        name: typing.cast(type[Section], field.annotation)
        for name, field in ServalConfig.model_fields.items()
    }


def is_list_field(section: str, key: str) -> bool:
    annotation = sections()[section].model_fields[key].annotation
    return typing.get_origin(annotation) is list


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{line}: invalid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected sections (a mapping), got {type(data).__name__}")
    return data


def _parse_scalar(section: str, key: str, raw: str) -> Any:
    """Turn a string from the environment or CLI into a value for pydantic to validate."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if is_list_field(section, key) and isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if value is None and raw.strip() not in ("", "null", "~", "None"):
        return raw
    return value


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Values from ``SERVAL_<SECTION>_<KEY>`` variables, by section."""
    environ = dict(os.environ if environ is None else environ)
    found: dict[str, dict[str, Any]] = {}
    for section_name, section in sections().items():
        for key in section.model_fields:
            raw = environ.get(f"{ENV_PREFIX}{section_name}_{key}".upper())
            if raw is not None:
                found.setdefault(section_name, {})[key] = _parse_scalar(section_name, key, raw)
    return found


def _merge(base: dict[str, Any], layer: dict[str, dict[str, Any]]) -> None:
    for section_name, values in layer.items():
        target = base.setdefault(section_name, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{section_name}: expected a mapping of keys")
        target.update(values)


def _describe(error: ErrorDetails) -> str:
    location = ".".join(str(part) for part in error["loc"])
    given = error.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    return f"{location}: {error['msg']}{shown}"


def build_config(
    file_values: dict[str, Any] | None = None,
    env_values: dict[str, dict[str, Any]] | None = None,
    cli_values: dict[str, dict[str, Any]] | None = None,
) -> ServalConfig:
    """Merge the sources (later wins) and validate them into a frozen config."""
    merged: dict[str, Any] = {}
    for name, values in (file_values or {}).items():
        merged[name] = dict(values) if isinstance(values, dict) else values
    for layer in (env_values or {}, cli_values or {}):
        _merge(merged, layer)
    try:
        return ServalConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0])) from None


def unknown_keys(file_values: dict[str, Any]) -> list[str]:
    """Keys in a config file that Serval does not know (reported as warnings, not errors)."""
    known = sections()
    unknown: list[str] = []
    for section_name, values in file_values.items():
        if section_name not in known:
            unknown.append(section_name)
        elif isinstance(values, dict):
            unknown += [
                f"{section_name}.{key}"
                for key in values
                if key not in known[section_name].model_fields
            ]
    return unknown


def load_config(
    config_path: Path | None,
    cli_values: dict[str, dict[str, Any]],
    environ: dict[str, str] | None = None,
) -> tuple[ServalConfig, list[str]]:
    """Read ``config_path`` (or ``config.yml`` if it exists), the environment and CLI values.

    Returns the config and warnings worth logging. Raises :class:`ConfigError`.
    """
    file_values: dict[str, Any] = {}
    if config_path is not None:
        if not config_path.is_file():
            raise ConfigError(f"config file not found: {config_path}")
        file_values = _read_yaml(config_path)
    elif Path("config.yml").is_file():
        file_values = _read_yaml(Path("config.yml"))
    warnings = [f"unknown config key ignored: {key}" for key in unknown_keys(file_values)]
    return build_config(file_values, env_overrides(environ), cli_values), warnings


def _yaml_value(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump()
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()
    return text.removesuffix("\n...").strip()


def export_sample() -> str:
    """The text of config_sample.yml: every key with its default and description."""
    lines = [
        "# Sample Serval configuration: copy to config.yml and change what you need.",
        "# Generated by `python main.py export-config`; every key shows its default.",
        "# Each key can also be set with an environment variable SERVAL_<SECTION>_<KEY>",
        "# or a command-line flag --<key-with-hyphens>.",
    ]
    defaults = ServalConfig()
    for section_name, section in sections().items():
        lines += ["", f"{section_name}:"]
        for key, field in section.model_fields.items():
            lines.append(f"  # {field.description or key}")
            lines.append(f"  {key}: {_yaml_value(getattr(getattr(defaults, section_name), key))}")
    return "\n".join(lines) + "\n"
