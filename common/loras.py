"""LoRA folders in ``lora.lora_dir``: listing them and resolving the names clients send."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from common.model_files import find_folders
from common.paths import safe_child

ADAPTER_CONFIG = "adapter_config.json"


class LoraChoice(NamedTuple):
    """One LoRA to apply: its folder, the name the client used, and its scaling (what
    :meth:`backends.base.Engine.load_loras` takes)."""

    path: Path
    name: str
    scaling: float = 1.0


def is_lora_folder(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()


def list_lora_folders(base: Path) -> list[str]:
    """The names of every LoRA folder (with an adapter_config.json) below ``base``."""
    return [name for name, _ in find_folders(base, is_lora_folder)]


def resolve_loras(
    base: Path, wanted: list[tuple[str, float]]
) -> tuple[list[LoraChoice], list[str]]:
    """The folders of the ``(name, scaling)`` pairs in ``wanted``, and the names not found.

    A name that would lead outside ``base`` is refused with a 400 before anything is touched.
    """
    found: list[LoraChoice] = []
    missing: list[str] = []
    for name, scaling in wanted:
        path = safe_child(base, name, what="loras.name")
        if is_lora_folder(path):
            found.append(LoraChoice(path, name, scaling))
        else:
            missing.append(name)
    return found, missing
