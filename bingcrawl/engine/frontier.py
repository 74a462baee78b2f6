"""The frontier: a bounded queue of candidates between the sources and the download workers.

It gives back-pressure (a producer waits in :meth:`Frontier.put` while the queue is full, so
producers never run more than ``maxsize`` candidates ahead of the workers) and a way to stop
that is not a polling loop: :meth:`Frontier.close` either lets the workers drain what is
queued (end of sources, quota exhausted) or makes :meth:`Frontier.get` return ``None`` at once
(a signal: queued candidates stay ``pending`` in the checkpoint for the next run).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Frontier"]

T = TypeVar("T")


class Frontier(Generic[T]):
    """A bounded FIFO with close semantics (Python 3.11 has no ``Queue.shutdown``)."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._cond = asyncio.Condition()
        self._closed = False
        self._drain = True

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    async def put(self, item: T) -> bool:
        """Queue ``item``, waiting while full. Returns False (item dropped) once closed."""
        async with self._cond:
            await self._cond.wait_for(lambda: self._closed or len(self._items) < self.maxsize)
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    async def get(self) -> T | None:
        """The next item, or ``None`` when the frontier is closed (and drained, if draining)."""
        async with self._cond:
            await self._cond.wait_for(lambda: bool(self._items) or self._closed)
            if self._items and (self._drain or not self._closed):
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            return None

    async def close(self, *, drain: bool = True) -> None:
        """Stop accepting items. ``drain=False`` also stops handing out the queued ones."""
        async with self._cond:
            self._closed = True
            self._drain = self._drain and drain
            self._cond.notify_all()

    def abandon(self) -> list[T]:
        """Remove and return what is still queued (after a non-draining close)."""
        items = list(self._items)
        self._items.clear()
        return items
