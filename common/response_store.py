"""Stored answers of the OpenAI Responses API, for ``previous_response_id`` and GET/DELETE.

Each entry belongs to an owner (a hash of the caller's key): another owner never sees it, as
if it did not exist. The store keeps at most ``capacity`` entries (the oldest go first) for at
most ``ttl`` seconds each, so its memory is bounded whatever the clients do. One lock guards it:
routes on the event loop and any worker thread may use it alike.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(frozen=True)
class _Entry(Generic[V]):
    owner: str
    expires: float
    value: V


class ResponseStore(Generic[V]):
    """Values by id, per owner, bounded in count (``capacity``; 0 keeps nothing) and age."""

    def __init__(self, capacity: int, ttl: float) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._entries: OrderedDict[str, _Entry[V]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, owner: str, key: str, value: V) -> None:
        with self._lock:
            self._prune()
            if self.capacity == 0:
                return
            self._entries[key] = _Entry(owner, time.monotonic() + self.ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def get(self, owner: str, key: str) -> V | None:
        """The value stored under ``key`` by ``owner``; None if absent, expired or another's."""
        with self._lock:
            self._prune()
            entry = self._entries.get(key)
            return entry.value if entry is not None and entry.owner == owner else None

    def delete(self, owner: str, key: str) -> bool:
        """Forget ``owner``'s ``key``; False if there was none to forget."""
        with self._lock:
            self._prune()
            entry = self._entries.get(key)
            if entry is None or entry.owner != owner:
                return False
            del self._entries[key]
            return True

    def __len__(self) -> int:
        with self._lock:
            self._prune()
            return len(self._entries)

    def _prune(self) -> None:
        """Drop expired entries: they were stored in order, so the oldest come first."""
        now = time.monotonic()
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                return
            del self._entries[key]
