"""Admission control: a cap on running requests, a bounded line, 429 beyond it."""

from __future__ import annotations

import asyncio

import pytest

from common.admission import Admission
from common.errors import TooManyRequestsError


async def one_slot_held(owner: str = "") -> Admission:
    """One slot (a line of any length), taken by a request of ``owner``."""
    admission = Admission(max_running=1, max_waiting=0)
    await admission.enter(owner)
    return admission


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
        admission = await one_slot_held()
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


def test_waiting_keys_take_turns_for_free_slots() -> None:
    """One slot; key a queues three requests before b queues two and c one. Slots go round
    the keys (a, b, c, a, b, a), not first come first served (a, a, a, b, b, c)."""

    async def scenario() -> list[str]:
        admission = await one_slot_held("a")
        order: list[str] = []

        async def request(name: str) -> None:
            await admission.enter(name[0])
            order.append(name)

        tasks = []
        for name in ("a1", "a2", "a3", "b1", "b2", "c1"):
            tasks.append(asyncio.create_task(request(name)))
            await asyncio.sleep(0)
        assert admission.waiting == 6 and not order
        for finished in ["a", *(name[0] for name in ("a1", "b1", "c1", "a2", "b2"))]:
            admission.leave(finished)
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(scenario()) == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_a_key_at_its_share_leaves_the_other_slots_to_other_keys() -> None:
    """Eight slots, a share of one half: key a gets four and queues the rest, and key b's
    request starts at once although a's requests came first."""

    async def scenario() -> None:
        admission = Admission(max_running=8, max_waiting=16, share=0.5)
        assert admission.running_share == 4 and admission.waiting_share == 8
        for _ in range(4):
            await admission.enter("a")
        queued = [asyncio.create_task(admission.enter("a")) for _ in range(8)]
        await asyncio.sleep(0)
        assert admission.running == 4 and admission.waiting == 8
        await asyncio.wait_for(admission.enter("b"), timeout=5)  # no wait: a slot is free
        assert admission.running == 5
        with pytest.raises(TooManyRequestsError) as refused:
            await admission.enter("a")  # a's share of the line is full, the line is not
        assert "key" in refused.value.message and refused.value.headers["Retry-After"] == "1"
        admission.leave("b")
        await asyncio.sleep(0)
        assert admission.running == 4 and admission.waiting == 8  # a stays at its share
        for _ in range(4):
            admission.leave("a")
        await asyncio.sleep(0)
        assert sum(task.done() for task in queued) == 4
        for task in queued:
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)

    asyncio.run(scenario())


def test_more_slots_admit_those_waiting() -> None:
    async def scenario() -> None:
        admission = await one_slot_held("a")
        waiter = asyncio.create_task(admission.enter("b"))
        await asyncio.sleep(0)
        assert not waiter.done()
        admission.resize(2)  # a model that batches two sequences was loaded
        await asyncio.wait_for(waiter, timeout=5)
        assert admission.running == 2 and admission.waiting == 0

    asyncio.run(scenario())


def test_a_waiter_cancelled_as_its_turn_comes_passes_the_slot_on() -> None:
    async def scenario() -> None:
        admission = await one_slot_held("a")
        first = asyncio.create_task(admission.enter("b"))
        second = asyncio.create_task(admission.enter("c"))
        await asyncio.sleep(0)
        first.cancel()  # its ticket is cancelled before its task hears of it
        admission.leave("a")
        await asyncio.wait_for(second, timeout=5)
        with pytest.raises(asyncio.CancelledError):
            await first
        assert admission.running == 1 and admission.waiting == 0

    asyncio.run(scenario())
