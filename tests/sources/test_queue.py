"""The query queue of the search source: level by level, finished only when nobody can add."""

from __future__ import annotations

import asyncio

from bingcrawl.sources.search import QueryQueue
from bingcrawl.store.rows import QueryRow


def row(id: int, depth: int) -> QueryRow:
    return QueryRow(
        id=id, source="expand", label="l", text=f"q{id}", norm=f"q{id}", parent_id=None,
        root_id=None, depth=depth, params={}, next_offset=0, state="active", pages=0,
        results=0, error=None,
    )  # fmt: skip


async def test_rows_come_out_shallowest_first_then_by_id() -> None:
    queue = QueryQueue()
    for r in (row(5, 2), row(3, 1), row(9, 0), row(4, 1)):
        queue.push(r)
    taken = []
    while (r := await queue.take()) is not None:
        taken.append(r.id)
        queue.release(r.id)
    assert taken == [9, 3, 4, 5]


async def test_a_deeper_row_waits_until_shallower_ones_have_expanded() -> None:
    queue = QueryQueue()
    queue.push(row(1, 0))
    queue.push(row(2, 0))
    first, second = await queue.take(), await queue.take()
    assert first is not None
    assert second is not None
    queue.push(row(3, 1))  # a child of the first
    waiter = asyncio.create_task(queue.take())
    await asyncio.sleep(0)
    assert not waiter.done()  # row 2 may still add level-1 rows
    queue.expanded(1)
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.push(row(4, 1))  # a child of the second, then it has expanded
    queue.expanded(2)
    child = await waiter
    assert child is not None
    assert child.id == 3
    # rows that expanded but still page do not block; finished rows release the queue
    nxt = await queue.take()
    assert nxt is not None
    assert nxt.id == 4
    for key in (1, 2, 3, 4):
        queue.release(key)
    assert await queue.take() is None


async def test_a_hold_keeps_the_queue_open_and_can_block_a_level() -> None:
    queue = QueryQueue()
    queue.hold("trending", depth=0)
    queue.push(row(7, 1))
    waiter = asyncio.create_task(queue.take())
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.release("trending")
    got = await waiter
    assert got is not None
    assert got.id == 7
    queue.release(7)
    assert await queue.take() is None
