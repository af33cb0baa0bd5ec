"""API keys: the ``api_tokens.yml`` file, its hot reload, and constant-time key checks.

Two levels: ``api`` keys generate and list what is loaded; the ``admin`` key may do everything.
The file holds ``admin_key`` (one string) and ``api_key`` (a string or a list of strings). It is
created with random keys on first start (mode 0600) and re-read when it changes on disk; a
broken file keeps the keys that were valid before it.
"""

from __future__ import annotations

import enum
import hmac
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import yaml
from loguru import logger

from common.errors import AuthenticationError, PermissionDeniedError


class KeyLevel(enum.IntEnum):
    API = 1
    ADMIN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Keys:
    admin_key: str
    api_keys: tuple[str, ...]


def new_key() -> str:
    """A random 128-bit key as 32 hex characters."""
    return secrets.token_hex(16)


def mask(key: str) -> str:
    """What may be shown of a key in logs."""
    return f"{key[:4]}…" if len(key) > 8 else "…"


def _parse(text: str) -> Keys:
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("expected admin_key and api_key entries")
    admin = data.get("admin_key")
    api = data.get("api_key")
    if not isinstance(admin, str) or not admin:
        raise ValueError("admin_key must be a non-empty string")
    api_list = [api] if isinstance(api, str) else api
    if not isinstance(api_list, list) or not all(isinstance(k, str) and k for k in api_list):
        raise ValueError("api_key must be a string or a list of strings")
    return Keys(admin_key=admin, api_keys=tuple(api_list))


def write_keys_file(path: Path, keys: Keys) -> None:
    """Write ``keys`` atomically with mode 0600, so a failed write never loses the old file."""
    api: str | list[str] = keys.api_keys[0] if len(keys.api_keys) == 1 else list(keys.api_keys)
    text = yaml.safe_dump({"api_key": api, "admin_key": keys.admin_key}, sort_keys=False)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class KeyStore:
    """The keys from ``api_tokens.yml``, re-read when the file changes."""

    def __init__(self, path: Path, check_interval: float = 1.0) -> None:
        self.path = path
        self.check_interval = check_interval
        self._keys: Keys | None = None
        self._stamp: tuple[int, int] | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()

    @property
    def keys(self) -> Keys:
        self.refresh()
        assert self._keys is not None, "load_or_create() was not called"
        return self._keys

    def load_or_create(self) -> bool:
        """Read the file, or create it with new keys. Returns True when it was created."""
        if self.path.exists():
            self._keys = _parse(self.path.read_text(encoding="utf-8"))
            self._stamp = self._file_stamp()
            return False
        keys = Keys(admin_key=new_key(), api_keys=(new_key(),))
        write_keys_file(self.path, keys)
        self._keys = keys
        self._stamp = self._file_stamp()
        return True

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size)

    def refresh(self, force: bool = False) -> None:
        """Re-read the file if it changed; a broken file keeps the previous keys."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.check_interval:
            return
        with self._lock:
            self._checked_at = now
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                keys = _parse(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError, yaml.YAMLError) as exc:
                logger.error(f"{self.path} could not be read, keeping the previous keys: {exc}")
                return
            if keys != self._keys:
                logger.info(
                    f"{self.path} changed: {len(keys.api_keys)} api key(s) and the admin key loaded"
                )
            self._keys = keys

    def level_of(self, key: str) -> KeyLevel | None:
        """The level of ``key``, comparing against every key in constant time."""
        keys = self.keys
        is_admin = _same(key, keys.admin_key)
        is_api = False
        for candidate in keys.api_keys:
            is_api |= _same(key, candidate)
        if is_admin:
            return KeyLevel.ADMIN
        return KeyLevel.API if is_api else None

    def add_api_key(self) -> str:
        """Append a new api key to the file and return it."""
        keys = self.keys
        key = new_key()
        write_keys_file(self.path, Keys(keys.admin_key, (*keys.api_keys, key)))
        self.refresh(force=True)
        return key


class HeaderLines(Protocol):
    """Request headers as (lower-case name, value) pairs, a repeated header once per line."""

    def items(self) -> Iterable[tuple[str, str]]: ...


KEY_HEADERS = ("x-admin-key", "x-api-key", "authorization")


def presented_keys(headers: HeaderLines) -> list[str]:
    """Every key a request carries, from X-Admin-Key, X-API-Key or Authorization: Bearer.

    A key header sent twice is refused (401): checking only one of its values would let the
    other pass unchecked to whatever reads the headers next.
    """
    found: list[str] = []
    seen: set[str] = set()
    for name, value in headers.items():
        name = name.lower()
        if name not in KEY_HEADERS:
            continue
        if name in seen:
            raise AuthenticationError(
                f"The request has more than one {name} header: send one key.",
                code="ambiguous_api_key",
            )
        seen.add(name)
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                found.append(token.strip())
        elif value.strip():
            found.append(value.strip())
    return found


class Authenticator:
    """Decides the level of a request from its headers."""

    def __init__(self, store: KeyStore | None) -> None:
        self.store = store

    @property
    def disabled(self) -> bool:
        return self.store is None

    def level(self, headers: HeaderLines) -> KeyLevel:
        """The request's level; raises 401 when no key or a wrong key is presented."""
        if self.store is None:
            return KeyLevel.ADMIN
        keys = presented_keys(headers)
        if not keys:
            raise AuthenticationError(
                "Missing API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
                code="missing_api_key",
            )
        levels = [self.store.level_of(key) for key in keys]
        if any(level is None for level in levels):
            raise AuthenticationError("Invalid API key.")
        return max(level for level in levels if level is not None)

    def require(self, headers: HeaderLines, needed: KeyLevel) -> KeyLevel:
        level = self.level(headers)
        if level < needed:
            raise PermissionDeniedError(f"This route needs an {needed.label} key.")
        return level


def describe_keys(keys: Keys) -> Iterable[str]:
    """Lines for the start-up banner: keys are masked (the whole keys are in the keys file)."""
    yield f"Admin key: {mask(keys.admin_key)}"
    for key in keys.api_keys:
        yield f"API key:   {mask(key)}"
