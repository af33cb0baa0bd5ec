"""Admission control: how many requests use the model at once, and how many may wait.

``network.max_concurrent_requests`` caps the requests holding the model; beyond it requests wait
in line (first come, first served), up to ``network.max_queued_requests``; a request that finds
the line full gets 429 with ``Retry-After`` instead of piling up. Zero means no limit.
"""

from __future__ import annotations

import asyncio
from collections import deque

from common.errors import TooManyRequestsError


class Admission:
    def __init__(self, max_running: int, max_waiting: int) -> None:
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.running = 0
        self._line: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._line)

    async def enter(self) -> None:
        """Take a slot, waiting in line for one if needed (429 when the line is full)."""
        if not self.max_running or (self.running < self.max_running and not self._line):
            self.running += 1
            return
        if self.max_waiting and len(self._line) >= self.max_waiting:
            raise TooManyRequestsError(
                "The server is busy: too many requests are waiting. Retry in a moment.",
                headers={"Retry-After": "1"},
            )
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append(ticket)
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self.leave()  # the slot was handed over as we were cancelled: pass it on
            else:
                self._line.remove(ticket)
            raise

    def leave(self) -> None:
        """Give the slot back, or hand it straight to the next request in line."""
        while self._line:
            ticket = self._line.popleft()
            if not ticket.done():
                ticket.set_result(None)
                return
        self.running -= 1
