"""The bounded frontier: back-pressure and both ways of closing."""

from __future__ import annotations

import asyncio

import pytest

from bingcrawl.engine.frontier import Frontier


async def test_put_waits_while_full() -> None:
    frontier: Frontier[int] = Frontier(2)
    assert await frontier.put(1)
    assert await frontier.put(2)
    blocked = asyncio.create_task(frontier.put(3))
    await asyncio.sleep(0)
    assert not blocked.done()
    assert await frontier.get() == 1
    assert await blocked
    assert len(frontier) == 2


async def test_draining_close_hands_out_the_rest() -> None:
    frontier: Frontier[int] = Frontier(5)
    for i in range(3):
        await frontier.put(i)
    await frontier.close()
    assert not await frontier.put(99)
    assert [await frontier.get() for _ in range(4)] == [0, 1, 2, None]


async def test_abort_close_stops_at_once_and_wakes_waiters() -> None:
    frontier: Frontier[int] = Frontier(1)
    await frontier.put(1)
    putter = asyncio.create_task(frontier.put(2))
    empty: Frontier[int] = Frontier(1)
    getter = asyncio.create_task(empty.get())
    await asyncio.sleep(0)
    await frontier.close(drain=False)
    await empty.close(drain=False)
    assert await putter is False
    assert await getter is None
    assert await frontier.get() is None
    assert frontier.abandon() == [1]


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        Frontier(0)


async def test_a_put_wakes_one_waiting_worker_not_all() -> None:
    frontier: Frontier[int] = Frontier(4)
    woken = 0

    async def worker() -> int | None:
        nonlocal woken
        item = await frontier.get()
        woken += 1
        return item

    workers = [asyncio.create_task(worker()) for _ in range(50)]
    await asyncio.sleep(0)
    assert len(frontier._getters) == 50
    assert await frontier.put(7)
    for _ in range(3):
        await asyncio.sleep(0)
    assert woken == 1
    assert len(frontier._getters) == 49  # the others were never woken
    assert [t.result() for t in workers if t.done()] == [7]
    await frontier.close()
    assert sorted(await asyncio.gather(*workers), key=str) == [7] + [None] * 49


async def test_a_get_wakes_one_waiting_producer() -> None:
    frontier: Frontier[int] = Frontier(1)
    await frontier.put(0)
    producers = [asyncio.create_task(frontier.put(i)) for i in range(1, 4)]
    await asyncio.sleep(0)
    assert len(frontier._putters) == 3
    assert await frontier.get() == 0
    await asyncio.sleep(0)
    assert [p.done() for p in producers] == [True, False, False]
    assert [await frontier.get() for _ in range(3)] == [1, 2, 3]
    assert all(await asyncio.gather(*producers))


async def test_a_woken_worker_cancelled_before_it_runs_passes_the_item_on() -> None:
    frontier: Frontier[int] = Frontier(2)
    first = asyncio.create_task(frontier.get())
    second = asyncio.create_task(frontier.get())
    await asyncio.sleep(0)
    assert await frontier.put(1)  # wakes the first worker ...
    first.cancel()  # ... which is cancelled before it runs
    assert await second == 1
    with pytest.raises(asyncio.CancelledError):
        await first
    assert not frontier._getters


async def test_a_cancelled_producer_leaves_the_line() -> None:
    frontier: Frontier[int] = Frontier(1)
    await frontier.put(0)
    blocked = asyncio.create_task(frontier.put(1))
    waiting = asyncio.create_task(frontier.put(2))
    await asyncio.sleep(0)
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    assert await frontier.get() == 0
    assert await waiting
    assert [await frontier.get()] == [2]
    assert len(frontier) == 0
