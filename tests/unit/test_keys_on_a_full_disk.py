"""A full disk while api_tokens.yml is written: the old keys survive and the error is clear."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from common.auth import KeyLevel, KeyStore
from tests.support.server import free_port, run_main


def _no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_adding_a_key_on_a_full_disk_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "api_tokens.yml"
    store = KeyStore(path, check_interval=0)
    store.load_or_create()
    before = path.read_text()
    keys = store.keys
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(OSError, match="No space"):
        store.add_api_key()
    assert path.read_text() == before
    assert store.level_of(keys.api_keys[0]) is KeyLevel.API
    assert store.level_of(keys.admin_key) is KeyLevel.ADMIN
    assert [p.name for p in tmp_path.iterdir()] == ["api_tokens.yml"]  # no temp file left


def test_an_unusable_keys_file_stops_the_server_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "api_tokens.yml").mkdir()  # cannot be read as a file
    result = run_main(["--port", str(free_port()), "--model-name", ""], tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("serval: cannot use api_tokens.yml")
