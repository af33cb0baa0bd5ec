"""GGUF model folders: their metadata is read without llama.cpp, a bad file is a 400, and a
folder with a GGUF file goes to the llamacpp engine."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from backends.llamacpp import native
from backends.llamacpp.model import cpu_threads
from backends.registry import choose_backend, unavailable_reason
from common.chat.templates import find_model_template
from common.errors import BadRequestError, UnsupportedError
from common.model_files import check_model_folder, context_length, gguf_metadata


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _gguf(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A GGUF header with ``entries`` (key, type, encoded value) and no tensors."""
    body = b"".join(_string(key) + struct.pack("<I", kind) + value for key, kind, value in entries)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(entries)) + body


ENTRIES = [
    ("general.architecture", 8, _string("llama")),
    ("llama.context_length", 4, struct.pack("<I", 2048)),
    ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 2) + _string("a") + _string("b")),
    ("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 2) + struct.pack("<ff", 0.0, 1.0)),
    ("tokenizer.chat_template", 8, _string("{{ messages[0]['content'] }}")),
]


def _folder(base: Path, data: bytes, name: str = "model.gguf") -> Path:
    folder = base / "gguf-model"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(data)
    return folder


def test_metadata_context_and_template_come_from_the_file(tmp_path: Path) -> None:
    folder = _folder(tmp_path, _gguf(ENTRIES))
    meta = gguf_metadata(folder / "model.gguf")
    assert meta["general.architecture"] == "llama"
    assert "tokenizer.ggml.tokens" not in meta  # arrays are skipped, not read
    assert context_length(folder) == 2048
    check_model_folder(folder)
    template = find_model_template(folder, None)
    assert template is not None and "messages[0]" in template.source


@pytest.mark.parametrize(
    "data",
    [
        b"GGU",
        b"GGML" + b"\0" * 20,
        _gguf(ENTRIES)[:-5],  # truncated
        b"GGUF" + struct.pack("<IQQ", 3, 0, 10**9),  # absurd key count
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _string("k") + struct.pack("<I", 99),
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 40),  # huge key
    ],
)
def test_a_corrupt_gguf_is_a_400(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(BadRequestError):
        check_model_folder(_folder(tmp_path, data))


def test_a_folder_with_two_gguf_files_is_refused(tmp_path: Path) -> None:
    _folder(tmp_path, _gguf(ENTRIES), "a.gguf")
    with pytest.raises(BadRequestError, match="several GGUF files"):
        check_model_folder(_folder(tmp_path, _gguf(ENTRIES), "b.gguf"))


def test_a_gguf_folder_goes_to_llamacpp_and_only_there(tmp_path: Path) -> None:
    folder = _folder(tmp_path, _gguf(ENTRIES))
    with pytest.raises(UnsupportedError, match="only the llamacpp engine"):
        choose_backend("transformers", folder)
    if unavailable_reason("llamacpp") is not None:
        pytest.skip(f"llama.cpp is unavailable here: {unavailable_reason('llamacpp')}")
    assert choose_backend(None, folder) == "llamacpp"


def test_the_glibc_copy_imports_only_classic_symbols() -> None:
    """The copy made for glibc < 2.38 imports no C23 variant; that it loads is shown by every
    test that runs the engine on such a machine (Debian 12)."""
    folder = native.package_folder()
    if folder is None:
        pytest.skip("llama-cpp-py-sync is not installed")
    image = bytearray((folder / "libllama.so").read_bytes())
    # Its four C23 imports and the glibc 2.38 version they need; then nothing is left to do.
    assert native.use_classic_glibc_symbols(image) == 5
    assert native.use_classic_glibc_symbols(image) == 0


def test_llama_cpp_takes_omp_num_threads_or_every_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads() == 3
    for unset in ("", "0", "many"):
        monkeypatch.setenv("OMP_NUM_THREADS", unset)
        assert cpu_threads() == len(os.sched_getaffinity(0))
