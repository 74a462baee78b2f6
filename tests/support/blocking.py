"""How long the event loop was blocked by its own work, with the machine's stalls taken out.

A plain lag monitor (:mod:`bingcrawl.obs.looplag`) cannot tell a loop blocked by the
crawler from a process the machine did not run: on a shared CI host, CPU throttling or a busy
neighbour can stop every thread of the process for 100+ ms while the crawler did nothing
wrong. :func:`watch_blocking` samples the loop's timer lag, as the monitor does, and records
two more things per sample:

- the loop thread's own CPU time over the sample (:func:`time.thread_time`): a loop busy in
  Python or in C code shows here, whatever the machine did;
- a canary thread that sleeps 5 ms at a time and notes how late it woke. It needs the GIL for
  a moment only, which a busy loop thread gives up every switch interval (5 ms) and a thread
  blocked in a system call (a synchronous write, ``fsync``, a lock) does not hold at all. A
  canary that is late as long as the loop was, was stopped with it: the machine, not the loop.

The loop's own block in a sample is ``max(cpu, lag - canary_lateness)``: CPU work counts in
full, and a wait counts unless the whole process was stopped for it. What it cannot see is a
C call that holds the GIL while sleeping, which no library the crawler uses does.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

__all__ = ["BlockWatch", "Sample", "watch_blocking"]

CANARY_NAP = 0.005


@dataclass(frozen=True, slots=True)
class Sample:
    """One timer tick of the loop: when it was armed and fired, how late, and the CPU used."""

    start: float  # time.monotonic()
    end: float
    lag: float
    cpu: float


@dataclass(slots=True)
class BlockWatch:
    """Loop samples and canary wake-ups (``(start, end, lateness)``, monotonic seconds)."""

    interval: float = 0.01
    samples: list[Sample] = field(default_factory=list)
    canary: list[tuple[float, float, float]] = field(default_factory=list)

    def stall_during(self, sample: Sample) -> float:
        """The canary's worst lateness over naps that overlap ``sample``: how long the whole
        process could not run then."""
        return max(
            (late for start, end, late in self.canary if start < sample.end and end > sample.start),
            default=0.0,
        )

    def own_block(self, sample: Sample) -> float:
        """How much of ``sample``'s lag the loop thread is to blame for."""
        return max(sample.cpu, sample.lag - self.stall_during(sample))

    def worst(self) -> tuple[float, Sample | None]:
        """The largest own block seen and its sample (``(0.0, None)`` without samples)."""
        if not self.samples:
            return 0.0, None
        sample = max(self.samples, key=self.own_block)
        return self.own_block(sample), sample

    def describe(self, sample: Sample | None) -> str:
        if sample is None:
            return "no samples"
        return (
            f"lag {sample.lag * 1000:.0f} ms, loop CPU {sample.cpu * 1000:.0f} ms, "
            f"whole-process stall {self.stall_during(sample) * 1000:.0f} ms"
        )


def _canary(watch: BlockWatch, stop: threading.Event) -> None:
    while not stop.is_set():
        start = time.monotonic()
        time.sleep(CANARY_NAP)
        end = time.monotonic()
        watch.canary.append((start, end, max(0.0, end - start - CANARY_NAP)))


async def _sample(watch: BlockWatch) -> None:
    while True:
        start, cpu = time.monotonic(), time.thread_time()
        await asyncio.sleep(watch.interval)
        end = time.monotonic()
        lag = max(0.0, end - start - watch.interval)
        watch.samples.append(Sample(start, end, lag, time.thread_time() - cpu))


@contextlib.asynccontextmanager
async def watch_blocking(interval: float = 0.01) -> AsyncIterator[BlockWatch]:
    """Watch the running loop for the ``async with`` block (see the module docstring)."""
    watch = BlockWatch(interval)
    stop = threading.Event()
    canary = threading.Thread(target=_canary, args=(watch, stop), name="canary", daemon=True)
    canary.start()
    task = asyncio.create_task(_sample(watch))
    try:
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        stop.set()
        canary.join()
