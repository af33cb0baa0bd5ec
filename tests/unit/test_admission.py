"""Admission control: a cap on running requests, a bounded line, 429 beyond it."""

from __future__ import annotations

import asyncio

import pytest

from common.admission import Admission
from common.errors import TooManyRequestsError


def test_requests_beyond_the_cap_wait_their_turn_and_beyond_the_line_get_429() -> None:
    async def scenario() -> list[str]:
        admission = Admission(max_running=2, max_waiting=1)
        order: list[str] = []
        await admission.enter()
        await admission.enter()
        waiter = asyncio.create_task(admission.enter())
        await asyncio.sleep(0)
        assert admission.waiting == 1 and not waiter.done()
        with pytest.raises(TooManyRequestsError) as refused:
            await admission.enter()
        assert refused.value.headers["Retry-After"] == "1"
        admission.leave()
        await waiter
        order.append("admitted")
        assert admission.running == 2 and admission.waiting == 0
        admission.leave()
        admission.leave()
        assert admission.running == 0
        return order

    assert asyncio.run(scenario()) == ["admitted"]


def test_a_cancelled_waiter_leaves_the_line() -> None:
    async def scenario() -> None:
        admission = Admission(max_running=1, max_waiting=0)
        await admission.enter()
        waiter = asyncio.create_task(admission.enter())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert admission.waiting == 0
        admission.leave()
        assert admission.running == 0

    asyncio.run(scenario())


def test_no_cap_means_no_waiting() -> None:
    async def scenario() -> None:
        admission = Admission(max_running=0, max_waiting=0)
        for _ in range(100):
            await admission.enter()
        assert admission.running == 100 and admission.waiting == 0

    asyncio.run(scenario())
