"""Start-up keys that act on the process, and the ones that only say they do nothing yet."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from loguru import logger

from common import startup
from common.config import ServalConfig


def _logged(action: Callable[[], None]) -> list[str]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO")
    try:
        action()
    finally:
        logger.remove(sink)
    return lines


def test_inert_keys_are_named_only_when_set() -> None:
    assert startup.inert_settings(ServalConfig()) == []
    config = ServalConfig.model_validate(
        {
            "network": {"disable_fetch_requests": True},
            "model": {"vision": True},
            "developer": {"unsafe_launch": True},
        }
    )
    warnings = startup.inert_settings(config)
    # disable_fetch_requests and vision act now (docs/vision.md): only unsafe_launch is inert
    assert [w.split(" ")[0] for w in warnings] == ["developer.unsafe_launch"]


def test_priority_is_raised_as_far_as_permitted(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def setpriority(which: int, who: int, niceness: int) -> None:
        calls.append(niceness)
        if niceness < -5:  # what an RLIMIT_NICE of 25 allows
            raise PermissionError("not permitted")

    monkeypatch.setattr(os, "getpriority", lambda which, who: 0)
    monkeypatch.setattr(os, "setpriority", setpriority)
    lines = _logged(startup.raise_priority)
    assert calls[-1] == -5
    assert any("niceness 0 -> -5" in line for line in lines)


def test_a_refused_priority_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(which: int, who: int, niceness: int) -> None:
        raise PermissionError("not permitted")

    monkeypatch.setattr(os, "getpriority", lambda which, who: 0)
    monkeypatch.setattr(os, "setpriority", refuse)
    lines = _logged(startup.raise_priority)
    assert any("WARNING" in line and "does not permit" in line for line in lines)
