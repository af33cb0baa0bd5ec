"""Keys: generation, file mode, hot reload, header forms and levels."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
import yaml
from starlette.datastructures import Headers

from common.auth import Authenticator, KeyLevel, KeyStore, mask, presented_keys
from common.errors import AuthenticationError, PermissionDeniedError


def _write(path: Path, admin: str, api: str | list[str]) -> None:
    path.write_text(yaml.safe_dump({"admin_key": admin, "api_key": api}))
    # Make sure the change is visible to a stat-based check even within one clock tick.
    later = time.time() + 5
    os.utime(path, (later, later))


def test_first_start_creates_random_keys_readable_only_by_owner(tmp_path: Path) -> None:
    path = tmp_path / "api_tokens.yml"
    store = KeyStore(path)
    assert store.load_or_create() is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = store.keys
    assert len(keys.admin_key) == 32 and len(keys.api_keys[0]) == 32
    assert keys.admin_key != keys.api_keys[0]
    other = KeyStore(tmp_path / "other.yml")
    other.load_or_create()
    assert other.keys.admin_key != keys.admin_key
    assert KeyStore(path).load_or_create() is False  # the second start reads the same file


def test_levels_and_api_key_lists(tmp_path: Path) -> None:
    path = tmp_path / "api_tokens.yml"
    _write(path, "admin-secret", ["one-api-key", "two-api-key"])
    store = KeyStore(path)
    store.load_or_create()
    assert store.level_of("admin-secret") is KeyLevel.ADMIN
    assert store.level_of("two-api-key") is KeyLevel.API
    assert store.level_of("TWO-API-KEY") is None  # keys are case-sensitive
    assert store.level_of("") is None


def test_changes_on_disk_apply_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "api_tokens.yml"
    _write(path, "admin-secret", "old-api-key")
    store = KeyStore(path, check_interval=0)
    store.load_or_create()
    _write(path, "admin-secret", ["new-api-key"])
    assert store.level_of("new-api-key") is KeyLevel.API
    assert store.level_of("old-api-key") is None  # revoked


def test_broken_file_keeps_previous_keys(tmp_path: Path) -> None:
    path = tmp_path / "api_tokens.yml"
    _write(path, "admin-secret", "api-key-1")
    store = KeyStore(path, check_interval=0)
    store.load_or_create()
    path.write_text("admin_key: [unclosed\n")
    os.utime(path, (time.time() + 10, time.time() + 10))
    assert store.level_of("api-key-1") is KeyLevel.API
    assert store.level_of("admin-secret") is KeyLevel.ADMIN


def test_added_key_is_written_atomically(tmp_path: Path) -> None:
    path = tmp_path / "api_tokens.yml"
    store = KeyStore(path, check_interval=0)
    store.load_or_create()
    new = store.add_api_key()
    assert store.level_of(new) is KeyLevel.API
    assert new in yaml.safe_load(path.read_text())["api_key"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer k"},
        {"authorization": "bearer k"},
        {"x-api-key": "k"},
        {"x-admin-key": "k"},
    ],
)
def test_every_header_form_is_read(headers: dict[str, str]) -> None:
    assert presented_keys(headers) == ["k"]


def test_missing_wrong_and_too_low(tmp_path: Path) -> None:
    path = tmp_path / "api_tokens.yml"
    _write(path, "admin-secret", "api-key-1")
    store = KeyStore(path)
    store.load_or_create()
    auth = Authenticator(store)
    with pytest.raises(AuthenticationError):
        auth.level({})
    with pytest.raises(AuthenticationError):
        auth.level({"x-api-key": "nope"})
    with pytest.raises(PermissionDeniedError):
        auth.require({"x-api-key": "api-key-1"}, KeyLevel.ADMIN)
    assert auth.require({"x-api-key": "admin-secret"}, KeyLevel.ADMIN) is KeyLevel.ADMIN


def test_disabled_auth_makes_everyone_admin() -> None:
    assert Authenticator(None).level({}) is KeyLevel.ADMIN


def test_masked_keys_hide_the_secret() -> None:
    assert mask("0123456789abcdef") == "0123…"
    assert "89ab" not in mask("0123456789abcdef")


@pytest.mark.parametrize("name", [b"authorization", b"x-api-key", b"x-admin-key"])
def test_a_key_header_sent_twice_is_refused(tmp_path: Path, name: bytes) -> None:
    """Only the first of two values used to be checked: a valid key first let anything follow."""
    path = tmp_path / "api_tokens.yml"
    _write(path, "admin-secret", "api-key-1")
    store = KeyStore(path)
    store.load_or_create()
    valid = b"Bearer api-key-1" if name == b"authorization" else b"api-key-1"
    other = b"Bearer admin-guess" if name == b"authorization" else b"admin-guess"
    headers = Headers(raw=[(name, valid), (name, other)])
    with pytest.raises(AuthenticationError) as raised:
        Authenticator(store).level(headers)
    assert raised.value.code == "ambiguous_api_key"
    assert Authenticator(store).level(Headers(raw=[(name, valid)])) is KeyLevel.API
