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
