"""The loop-blocking watch used by the no-blocking test tells the loop's blocks from the
machine's stalls (tests/support/blocking.py)."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from tests.support.blocking import watch_blocking

BLOCK = 0.15


async def test_a_busy_loop_counts() -> None:
    async with watch_blocking() as watch:
        await asyncio.sleep(0.03)
        deadline = time.thread_time() + BLOCK
        while time.thread_time() < deadline:  # CPU work on the loop thread
            pass
        await asyncio.sleep(0.03)
    own, sample = watch.worst()
    assert own >= BLOCK * 0.9, watch.describe(sample)


async def test_a_blocking_call_counts() -> None:
    async with watch_blocking() as watch:
        await asyncio.sleep(0.03)
        time.sleep(BLOCK)  # a synchronous wait on the loop (the GIL is released)
        await asyncio.sleep(0.03)
    own, sample = watch.worst()
    assert own >= BLOCK * 0.9, watch.describe(sample)


async def test_a_stopped_process_does_not_count() -> None:
    # The whole process stopped (SIGSTOP ... SIGCONT from a child), as a throttled or
    # overcommitted machine does: the loop is late but did nothing wrong.
    stopper = (
        "import os, signal, sys, time\n"
        "pid = int(sys.argv[1])\n"
        "os.kill(pid, signal.SIGSTOP)\n"
        f"time.sleep({BLOCK})\n"
        "os.kill(pid, signal.SIGCONT)\n"
    )
    async with watch_blocking() as watch:
        await asyncio.sleep(0.03)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", stopper, str(os.getpid())
        )
        assert await child.wait() == 0
        await asyncio.sleep(0.03)
    lags = max(s.lag for s in watch.samples)
    assert lags >= BLOCK * 0.9  # the stop did happen while watched
    own, sample = watch.worst()
    assert own < BLOCK / 2, watch.describe(sample)
