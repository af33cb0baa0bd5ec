"""The store behind previous_response_id: per owner, bounded in count and age."""

from __future__ import annotations

import time

from common.response_store import ResponseStore


def test_an_owner_sees_only_its_own_entries() -> None:
    store: ResponseStore[str] = ResponseStore(capacity=4, ttl=60)
    store.put("alice", "resp_1", "hers")
    assert store.get("alice", "resp_1") == "hers"
    assert store.get("bob", "resp_1") is None
    assert not store.delete("bob", "resp_1")
    assert store.delete("alice", "resp_1") and store.get("alice", "resp_1") is None


def test_the_oldest_go_first_past_the_capacity() -> None:
    store: ResponseStore[int] = ResponseStore(capacity=2, ttl=60)
    for number in range(3):
        store.put("alice", f"resp_{number}", number)
    assert len(store) == 2 and store.get("alice", "resp_0") is None
    assert store.get("alice", "resp_2") == 2


def test_entries_expire_and_capacity_zero_keeps_nothing() -> None:
    store: ResponseStore[int] = ResponseStore(capacity=2, ttl=0.05)
    store.put("alice", "resp_1", 1)
    time.sleep(0.1)
    assert store.get("alice", "resp_1") is None and len(store) == 0
    none_kept: ResponseStore[int] = ResponseStore(capacity=0, ttl=60)
    none_kept.put("alice", "resp_1", 1)
    assert none_kept.get("alice", "resp_1") is None
