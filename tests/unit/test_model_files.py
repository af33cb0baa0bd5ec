"""Model folder and file-name checks: every bad name or corrupt header is a 400, never a crash."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from common.errors import BadRequestError
from common.model_files import check_model_folder
from common.paths import safe_child


def _model_folder(base: Path, header: object, data: bytes = b"\0" * 8) -> Path:
    folder = base / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    raw = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return folder


def test_a_well_formed_header_passes(tmp_path: Path) -> None:
    header = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    check_model_folder(_model_folder(tmp_path, header))


@pytest.mark.parametrize(
    "header",
    [
        [1, 2, 3],
        "text",
        {"w": {"dtype": "F32", "data_offsets": "0-8"}},
        {"w": {"dtype": "F32", "data_offsets": [0]}},
        {"w": {"dtype": "F32", "data_offsets": [0, "8"]}},
        {"w": {"dtype": "F32", "data_offsets": [8, 0]}},
        {"w": {"dtype": "F32", "data_offsets": [0, -8]}},
        {"w": {"dtype": "F32", "data_offsets": [0, 8.0]}},
        {"w": {"dtype": "F32"}},
        {"w": [0, 8]},
    ],
    ids=[
        "list",
        "string",
        "offsets-string",
        "offsets-short",
        "offsets-text",
        "offsets-reversed",
        "offsets-negative",
        "offsets-float",
        "offsets-missing",
        "entry-list",
    ],
)
def test_a_malformed_safetensors_header_is_a_400(tmp_path: Path, header: object) -> None:
    with pytest.raises(BadRequestError, match="corrupt"):
        check_model_folder(_model_folder(tmp_path, header))


@pytest.mark.parametrize(
    "name",
    ["a" * 256, "é" * 128, f"nested/{'b' * 300}", "x/" * 600, "bad\ud800name", "\udcff"],
    ids=["256-bytes", "256-utf8-bytes", "long-part", "long-path", "surrogate", "low-surrogate"],
)
def test_names_the_file_system_cannot_take_are_a_400(tmp_path: Path, name: str) -> None:
    with pytest.raises(BadRequestError) as raised:
        safe_child(tmp_path, name, what="model_name")
    assert raised.value.param == "model_name"


def test_a_name_of_255_bytes_is_still_looked_up(tmp_path: Path) -> None:
    assert safe_child(tmp_path, "a" * 255).name == "a" * 255
