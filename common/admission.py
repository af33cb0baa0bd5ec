"""Admission control: how many requests generate at once, how many may wait, and whose turn it is.

A request takes a *slot* while it generates. There are ``max_running`` slots (0: no limit);
beyond them requests wait in line, up to ``max_waiting`` (0: no limit), and a request that finds
the line full gets 429 with ``Retry-After`` instead of piling up.

Slots and places in line are shared fairly between callers (an *owner*: one API key). No owner
may hold more than its share of the slots, nor more than its share of the line, so one key can
neither take every slot nor fill the queue; and when a slot frees, the owners that wait take
turns (round-robin), each admitting its own requests first come, first served. So another key's
request starts at the next free slot, however many requests the first key has sent.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque

from common.errors import TooManyRequestsError

RETRY_AFTER = {"Retry-After": "1"}


def share_of(total: int, share: float) -> int:
    """How many of ``total`` places one owner may hold with ``share`` (0: no limit at all)."""
    if not total or share >= 1:
        return total
    return max(1, math.ceil(total * share))


class Admission:
    """A fair line in front of ``max_running`` slots; see the module docstring."""

    def __init__(self, max_running: int, max_waiting: int, share: float = 1.0) -> None:
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.share = share
        self.running = 0
        self._running_by: Counter[str] = Counter()
        self._lines: dict[str, deque[asyncio.Future[None]]] = {}
        self._turns: deque[str] = deque()  # owners with requests in line, whose turn is next

    @property
    def waiting(self) -> int:
        return sum(len(line) for line in self._lines.values())

    @property
    def running_share(self) -> int:
        """The most slots one owner may hold."""
        return share_of(self.max_running, self.share)

    @property
    def waiting_share(self) -> int:
        """The most places in line one owner may hold."""
        return share_of(self.max_waiting, self.share)

    def resize(self, max_running: int) -> None:
        """Change the number of slots (a model with another batch size was loaded)."""
        self.max_running = max_running
        self._admit_next()

    def _may_run(self, owner: str) -> bool:
        if not self.max_running:
            return True
        return self.running < self.max_running and self._running_by[owner] < self.running_share

    def _take(self, owner: str) -> None:
        self.running += 1
        self._running_by[owner] += 1

    async def enter(self, owner: str = "") -> None:
        """Take a slot for ``owner``, waiting in line for one if needed (429 when the line, or
        ``owner``'s share of it, is full)."""
        if owner not in self._lines and self._may_run(owner):
            self._take(owner)
            return
        line = self._lines.get(owner, ())
        if self.max_waiting and self.waiting >= self.max_waiting:
            raise TooManyRequestsError(
                "The server is busy: too many requests are waiting. Retry in a moment.",
                headers=dict(RETRY_AFTER),
            )
        if self.max_waiting and len(line) >= self.waiting_share:
            raise TooManyRequestsError(
                "This key has too many requests waiting already. Retry when one has finished.",
                headers=dict(RETRY_AFTER),
            )
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if owner not in self._lines:
            self._lines[owner] = deque()
            self._turns.append(owner)
        self._lines[owner].append(ticket)
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self.leave(owner)  # the slot was handed over as we were cancelled: pass it on
            else:
                self._drop(owner, ticket)
            raise

    def leave(self, owner: str = "") -> None:
        """Give ``owner``'s slot back; the next owner in turn that may run takes it."""
        self.running -= 1
        self._running_by[owner] -= 1
        if not self._running_by[owner]:
            del self._running_by[owner]
        self._admit_next()

    def _admit_next(self) -> None:
        """Hand free slots to waiting owners in turn, skipping those at their share."""
        skipped = 0
        while self._turns and skipped < len(self._turns):
            owner = self._turns[0]
            if not self._may_run(owner):
                if self.max_running and self.running >= self.max_running:
                    return  # no slot is free for anyone
                self._turns.rotate(-1)
                skipped += 1
                continue
            ticket = self._lines[owner].popleft()
            self._turns.popleft()
            if self._lines[owner]:
                self._turns.append(owner)  # its next request waits for its next turn
            else:
                del self._lines[owner]
            if ticket.done():  # cancelled, its task not told yet: not a turn
                continue
            self._take(owner)
            ticket.set_result(None)
            skipped = 0

    def _drop(self, owner: str, ticket: asyncio.Future[None]) -> None:
        line = self._lines.get(owner)
        if line is None or ticket not in line:
            return  # already taken out of line as a cancelled ticket
        line.remove(ticket)
        if not line:
            del self._lines[owner]
            self._turns.remove(owner)
