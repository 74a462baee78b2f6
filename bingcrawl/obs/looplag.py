"""Event-loop lag: how late the loop wakes a timer. A blocked loop shows as a large lag."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

__all__ = ["LagMonitor", "monitor_lag"]


@dataclass(slots=True)
class LagMonitor:
    """Samples of loop lag in seconds, taken every ``interval`` seconds."""

    interval: float = 0.01
    samples: list[float] = field(default_factory=list)

    async def run(self) -> None:
        """Sample until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            self.samples.append(max(0.0, loop.time() - start - self.interval))

    @property
    def max(self) -> float:
        """The worst lag seen (0 without samples)."""
        return max(self.samples, default=0.0)

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile of the lag (0 <= p <= 100)."""
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[index]


@contextlib.asynccontextmanager
async def monitor_lag(interval: float = 0.01) -> AsyncIterator[LagMonitor]:
    """Measure loop lag for the duration of the ``async with`` block."""
    monitor = LagMonitor(interval)
    task = asyncio.create_task(monitor.run())
    try:
        yield monitor
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
