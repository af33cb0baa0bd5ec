"""Model load progress in the console: a rich progress bar per component on a terminal,
plain log lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

from loguru import logger
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from backends.base import LoadProgress


async def shown_in_console(
    name: str, events: AsyncIterator[LoadProgress]
) -> AsyncIterator[LoadProgress]:
    """Pass ``events`` through, drawing them in the console as they go."""
    if not sys.stderr.isatty():
        async for event in events:
            if event.status == "finished" or event.module == 0:
                logger.info(f"loading {name} ({event.model_type}): {event.module}/{event.modules}")
            yield event
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    tasks: dict[str, TaskID] = {}
    with progress:
        async for event in events:
            if event.model_type not in tasks:
                tasks[event.model_type] = progress.add_task(
                    f"Loading {name} ({event.model_type})", total=event.modules
                )
            progress.update(tasks[event.model_type], completed=event.module, total=event.modules)
            yield event
