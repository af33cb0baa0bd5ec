"""Model folders on disk: finding them, reading their context length, checking them."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import BadRequestError, NotFoundError
from common.paths import safe_child

MAX_DEPTH = 4


@dataclass(frozen=True)
class ModelFolder:
    id: str
    path: Path
    max_seq_len: int | None


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def context_length(model_dir: Path) -> int | None:
    if not (model_dir / "config.json").is_file():
        return gguf_context_length(model_dir)
    config = read_json(model_dir / "config.json")
    for section in (config, config.get("text_config") or {}):
        if isinstance(section, dict):
            for key in ("max_position_embeddings", "max_sequence_length", "n_positions"):
                if isinstance(section.get(key), int):
                    return section[key]
    return None


EMBEDDING_MARKERS = ("modules.json", "config_sentence_transformers.json")


def gguf_files(path: Path) -> list[Path]:
    return sorted(file for file in path.glob("*.gguf") if file.is_file())


def is_model_folder(path: Path) -> bool:
    """A HF folder (config.json) or a folder holding a GGUF file (llama.cpp's)."""
    return (path / "config.json").is_file() or bool(gguf_files(path))


def is_embedding_folder(path: Path) -> bool:
    """A sentence-transformers model (served by /v1/embeddings, not as a language model)."""
    return any((path / marker).is_file() for marker in EMBEDDING_MARKERS)


def find_folders(
    base: Path,
    accept: Callable[[Path], bool],
    exclude: tuple[Path, ...] = (),
    linked: bool = False,
) -> list[tuple[str, Path]]:
    """Folders below ``base`` (a few levels deep) that ``accept`` takes, as (id relative to
    ``base``, path); the search does not go inside an accepted folder, nor through a symlink.
    With ``linked``, a symlinked folder that ``accept`` takes is listed (see common/paths.py)."""
    if not base.is_dir():
        return []
    root = base.resolve()
    excluded = {path.resolve() for path in exclude if path.resolve() != root}
    found: list[tuple[str, Path]] = []
    for current, dirs, _ in os.walk(root, followlinks=False):
        here = Path(current)
        depth = len(here.relative_to(root).parts)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and here / d not in excluded and depth < MAX_DEPTH
        )
        if here != root and accept(here):
            found.append((here.relative_to(root).as_posix(), here))
            dirs[:] = []
        elif linked:
            links = [here / d for d in dirs if (here / d).is_symlink() and accept(here / d)]
            found += [(link.relative_to(root).as_posix(), link) for link in links]
    return sorted(found)


def list_model_folders(base: Path, exclude: tuple[Path, ...] = ()) -> list[ModelFolder]:
    """Every language model folder (with a config.json) below ``base``, by relative id."""
    return [
        ModelFolder(name, path, context_length(path))
        for name, path in find_folders(base, is_model_folder, exclude, linked=True)
        if not is_embedding_folder(path)
    ]


def resolve_model_folder(base: Path, name: str, what: str = "model_name") -> Path:
    """The folder for ``name`` under ``base``: 400 if it escapes, 404 if it is not there."""
    path = safe_child(base, name, what=what, follow_links=True)
    if not path.is_dir():
        raise NotFoundError(f"Model {name!r} not found in {base}/.", param=what)
    return path


def _data_end(name: str, key: str, entry: object) -> int:
    """Where the bytes of tensor ``key`` end, from its ``data_offsets`` ``[begin, end]``."""
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(value) is int and value >= 0 for value in offsets)
        or offsets[0] > offsets[1]
    ):
        raise BadRequestError(f"{name} is corrupt: tensor {key!r} has no valid data_offsets.")
    return offsets[1]


def check_safetensors(path: Path) -> None:
    """Refuse a safetensors file whose header is unreadable or whose size does not match it."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise BadRequestError(f"{path.name} is not a safetensors file (too short).")
        (header_size,) = struct.unpack("<Q", head)
        if header_size > min(size - 8, 100_000_000):
            raise BadRequestError(f"{path.name} is corrupt: its header size is impossible.")
        try:
            header = json.loads(handle.read(header_size))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise BadRequestError(f"{path.name} is corrupt: its header is not JSON.") from None
    if not isinstance(header, dict):
        raise BadRequestError(f"{path.name} is corrupt: its header is not a JSON object.")
    ends = [
        _data_end(path.name, key, entry) for key, entry in header.items() if key != "__metadata__"
    ]
    if 8 + header_size + max(ends, default=0) != size:
        raise BadRequestError(f"{path.name} is corrupt or truncated (size does not match).")


GGUF_MAGIC = b"GGUF"
GGUF_MAX_ENTRIES = 100_000
GGUF_MAX_STRING = 16 << 20
# Value types of GGUF metadata: fixed-size ones by struct format; 8 is a string, 9 an array.
GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q"}
GGUF_SCALARS[12] = "d"
GGUF_STRING, GGUF_ARRAY = 8, 9
GgufValue = str | int | float | bool


class _GgufHeader:
    """Reads the key/value section at the start of a GGUF file, from a file handle."""

    def __init__(self, handle: Any, name: str) -> None:
        self.handle, self.name = handle, name

    def take(self, size: int) -> bytes:
        data: bytes = self.handle.read(size)
        if len(data) != size:
            raise BadRequestError(f"{self.name} is truncated (its metadata ends early).")
        return data

    def number(self, kind: int) -> Any:
        fmt = "<" + GGUF_SCALARS[kind]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        size = self.number(10)
        if size > GGUF_MAX_STRING:
            raise BadRequestError(f"{self.name} is corrupt: a metadata string is too long.")
        return self.take(size).decode("utf-8", errors="replace")

    def value(self, kind: int) -> GgufValue | None:
        """A scalar or string value; an array is skipped (None)."""
        if kind == GGUF_STRING:
            return self.string()
        if kind in GGUF_SCALARS:
            value: GgufValue = self.number(kind)
            return value
        if kind != GGUF_ARRAY:
            raise BadRequestError(f"{self.name} is corrupt: unknown metadata type {kind}.")
        item_kind, count = self.number(4), self.number(10)
        if item_kind in GGUF_SCALARS:
            size = struct.calcsize(GGUF_SCALARS[item_kind]) * count
            if size > GGUF_MAX_STRING * 4:
                raise BadRequestError(f"{self.name} is corrupt: a metadata array is too long.")
            self.handle.seek(size, os.SEEK_CUR)
        else:
            for _ in range(min(count, GGUF_MAX_STRING)):
                self.value(item_kind)
        return None


def gguf_metadata(file: Path) -> dict[str, GgufValue]:
    """The scalar and string metadata of a GGUF file (arrays such as the vocabulary left out)."""
    with file.open("rb") as handle:
        header = _GgufHeader(handle, file.name)
        if header.take(4) != GGUF_MAGIC:
            raise BadRequestError(f"{file.name} is not a GGUF file.")
        header.take(4 + 8)  # version, tensor count
        entries = header.number(10)
        if entries > GGUF_MAX_ENTRIES:
            raise BadRequestError(f"{file.name} is corrupt: it claims {entries} metadata keys.")
        found: dict[str, GgufValue] = {}
        for _ in range(entries):
            key = header.string()
            value = header.value(header.number(4))
            if value is not None:
                found[key] = value
        return found


def gguf_context_length(model_dir: Path) -> int | None:
    files = gguf_files(model_dir)
    if not files:
        return None
    try:
        meta = gguf_metadata(files[0])
    except (OSError, BadRequestError):
        return None
    length = meta.get(f"{meta.get('general.architecture')}.context_length")
    return length if isinstance(length, int) else None


def check_gguf(path: Path) -> None:
    """Refuse a folder with several GGUF files, or a file whose metadata cannot be read
    (llama.cpp checks the tensors while loading)."""
    files = gguf_files(path)
    if len(files) > 1:
        names = ", ".join(file.name for file in files)
        raise BadRequestError(f"{path.name} holds several GGUF files ({names}): keep one.")
    gguf_metadata(files[0])


def check_model_folder(path: Path) -> None:
    """Refuse a folder that cannot be a loadable model, before anything is unloaded."""
    if not is_model_folder(path):
        raise BadRequestError(f"{path.name} is not a model folder: it has no config.json.")
    if gguf_files(path):
        check_gguf(path)
        return
    if not read_json(path / "config.json"):
        raise BadRequestError(f"{path.name}/config.json is not valid JSON.")
    weights = sorted(path.glob("*.safetensors"))
    if not weights and not any(path.glob("*.bin")):
        raise BadRequestError(f"{path.name} holds no weights (*.safetensors).")
    for file in weights:
        check_safetensors(file)
