"""The frontier: a bounded queue of candidates between the sources and the download workers.

It gives back-pressure (a producer waits in :meth:`Frontier.put` while the queue is full, so
producers never run more than ``maxsize`` candidates ahead of the workers) and a way to stop
that is not a polling loop: :meth:`Frontier.close` either lets the workers drain what is
queued (end of sources, quota exhausted) or makes :meth:`Frontier.get` return ``None`` at once
(a signal: queued candidates stay ``pending`` in the checkpoint for the next run).

Each queued item wakes one waiting worker and each item taken wakes one waiting producer,
first come first served, as :class:`asyncio.Queue` does. (A condition variable notified for
all on every put and get woke every idle worker per item - 128 wake-ups, 127 of them only to
wait again, per candidate when the workers outpace a search API; now one.) A waiter woken
and then cancelled before it ran hands its wake-up on, so no item waits beside an idle worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
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
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
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
        while not self._closed and len(self._items) >= self.maxsize:
            await self._wait(self._putters, lambda: len(self._items) < self.maxsize)
        if self._closed:
            return False
        self._items.append(item)
        _wake_one(self._getters)
        return True

    async def get(self) -> T | None:
        """The next item, or ``None`` when the frontier is closed (and drained, if draining)."""
        while not self._items and not self._closed:
            await self._wait(self._getters, lambda: bool(self._items))
        if self._items and (self._drain or not self._closed):
            item = self._items.popleft()
            _wake_one(self._putters)
            return item
        return None

    async def close(self, *, drain: bool = True) -> None:
        """Stop accepting items. ``drain=False`` also stops handing out the queued ones."""
        self._closed = True
        self._drain = self._drain and drain
        for waiters in (self._getters, self._putters):
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)

    def abandon(self) -> list[T]:
        """Remove and return what is still queued (after a non-draining close)."""
        items = list(self._items)
        self._items.clear()
        return items

    async def _wait(
        self, waiters: deque[asyncio.Future[None]], ready: Callable[[], bool]
    ) -> None:
        """Wait in line in ``waiters`` until woken (by an item, a free slot or the close)."""
        waiter = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            waiter.cancel()
            with contextlib.suppress(ValueError):  # already woken: out of the line
                waiters.remove(waiter)
            if ready() and not self._closed:
                _wake_one(waiters)  # the wake-up this waiter got (or would get) goes on
            raise


def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
    """Wake the first waiter still waiting (cancelled ones are skipped)."""
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return
