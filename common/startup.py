"""Start-up settings that act on the process, or that say they do nothing yet.

A config key that is set must never be silently ignored: ``developer.realtime_process_priority``
raises the process priority as far as the system permits, and the keys that have no effect in
Serval yet are named in a warning at start.
"""

from __future__ import annotations

import os

from loguru import logger

from common.config import ServalConfig

PRIORITY_NICENESS = -20  # the highest; the kernel gives an unprivileged process none of it


def inert_settings(config: ServalConfig) -> list[str]:
    """Warnings for the set keys that do nothing in Serval (yet)."""
    warnings = []
    if config.developer.unsafe_launch:
        warnings.append(
            "developer.unsafe_launch does nothing: Serval runs no dependency check to skip "
            "(an engine whose library is missing is refused when a model is loaded on it)"
        )
    return warnings


def raise_priority() -> None:
    """Raise this process's CPU priority (a lower niceness), as far as it is allowed to."""
    try:
        before = os.getpriority(os.PRIO_PROCESS, 0)
        for niceness in range(PRIORITY_NICENESS, before):
            try:
                os.setpriority(os.PRIO_PROCESS, 0, niceness)
            except PermissionError:
                continue
            logger.info(f"process priority raised: niceness {before} -> {niceness}")
            return
    except (AttributeError, OSError) as exc:  # no getpriority (Windows), or refused
        logger.warning(f"developer.realtime_process_priority: cannot raise the priority: {exc}")
        return
    logger.warning(
        "developer.realtime_process_priority: the system does not permit a higher priority "
        f"(niceness stays {before}; it needs CAP_SYS_NICE or a raised RLIMIT_NICE)"
    )


def apply_startup_settings(config: ServalConfig) -> None:
    """Warn about the inert keys that are set, and raise the priority when asked."""
    for warning in inert_settings(config):
        logger.warning(warning)
    if config.developer.realtime_process_priority:
        raise_priority()
