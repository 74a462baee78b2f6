"""Hash images off the event loop: :class:`HashPool`, a batching process pool.

The per-image work is :func:`bingcrawl.imaging.hashing.hash_image`; this module only moves
it to worker processes (or a thread), coalescing concurrent calls into batches, bounding the
batches in flight, and surviving workers that die.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import os
import queue
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.queues import Queue
from types import TracebackType
from typing import Any, Final, Self

from bingcrawl.errors import ConfigError
from bingcrawl.imaging.hashing import (
    CONVERT_TO,
    DEFAULT_MAX_PIXELS,
    HASH_ALGOS,
    NEAR_DUP_METHODS,
    hash_batch,
    worker_initializer,
)
from bingcrawl.records import ErrorClass, Hashed, HashFailure

__all__ = ["HashPool", "HashPoolConfig", "HashPoolStats"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HashPoolConfig:
    """Validated settings of a :class:`HashPool` (``workers`` already resolved to a count).

    ``workers == 0`` hashes in a thread of the event loop's default executor (tiny tests and
    environments without process support); otherwise a process pool of that many workers.
    ``start_method`` is ``spawn`` (default, portable) or ``forkserver``; ``fork`` is refused,
    because forking a process that runs an event loop and threads can copy held locks.
    """

    workers: int
    batch_size: int = 16
    max_inflight: int = 2
    algo: str = "phash"
    max_pixels: int = DEFAULT_MAX_PIXELS
    draft: bool = True
    start_method: str = "spawn"
    decode_timeout: float = 30.0
    close_timeout: float = 10.0
    convert_to: str = "keep"
    method: str = "regions"

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ConfigError("workers", f"must be >= 0 (0 = hash in a thread), got {self.workers}")
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.max_inflight < 1:
            raise ConfigError("max_inflight", f"must be >= 1, got {self.max_inflight}")
        if self.convert_to not in CONVERT_TO:
            raise ConfigError(
                "--convert-to", f"unknown {self.convert_to!r}; choose one of {CONVERT_TO}"
            )
        if self.method not in NEAR_DUP_METHODS:
            raise ConfigError(
                "--near-dup-method", f"unknown {self.method!r}; choose {NEAR_DUP_METHODS}"
            )
        if self.algo not in HASH_ALGOS:
            raise ConfigError("algo", f"unknown hash algorithm {self.algo!r}; choose {HASH_ALGOS}")
        if self.max_pixels < 1:
            raise ConfigError("max_pixels", f"must be >= 1, got {self.max_pixels}")
        for name in ("decode_timeout", "close_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < float("inf")):
                raise ConfigError(name, f"must be a positive number of seconds, got {value!r}")
        if self.start_method not in ("spawn", "forkserver"):
            raise ConfigError(
                "start_method", f"must be 'spawn' or 'forkserver', got {self.start_method!r}"
            )


@dataclass(slots=True)
class HashPoolStats:
    """Counters of one :class:`HashPool` (for stats.json and tests)."""

    images: int = 0
    batches: int = 0
    peak_inflight: int = 0
    restarts: int = 0


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(slots=True)
class _Job:
    data: bytes
    future: asyncio.Future[Hashed | HashFailure]


# How many times in a row the process pool may break without completing a batch before we
# conclude the workers cannot run at all (rather than one image killing them).
_MAX_CONSECUTIVE_RESTARTS: Final = 5
# Generous: spawning imports numpy, Pillow and imagehash, on a machine that may be busy.
_START_TIMEOUT: Final = 120.0
# Attempts for one image whose batch was lost with a broken pool: once in its batch, then
# alone, then alone again; a pool broken every time means this image kills the decoder.
_MAX_ATTEMPTS: Final = 3


class HashPool:
    """Hash images off the event loop, coalescing concurrent calls into batches.

    Use as ``async with HashPool(workers=2) as pool: result = await pool.hash(data)``.
    Entering starts every worker process (``spawn`` by default, see :class:`HashPoolConfig`)
    and waits until each has run :func:`worker_initializer`. Concurrent :meth:`hash` calls are
    gathered into batches of up to ``batch_size``: a batch leaves as soon as it is full, or on
    the next event-loop iteration (no timer, no added latency), or when an in-flight slot frees
    up; at most ``max_inflight`` batches (default 2 x workers) are in the executor at once, so
    memory stays flat. If a worker process dies (OOM killer, a crashing decoder), the pool is
    replaced and the lost images are retried one at a time; an image that kills a worker every
    time is reported as ``not_an_image``. A batch that takes longer than ``decode_timeout``
    seconds (plus one per image) has a worker stuck in a decoder: the workers are killed and
    the images retried the same way; an image that hangs every time is ``decode_timeout``.

    Closing (:meth:`aclose` or leaving the ``async with``) fails calls still waiting for a batch
    with RuntimeError, gives batches in flight ``close_timeout`` seconds to finish (then kills
    the workers), and shuts the workers down. Closing twice is harmless; :meth:`hash` after
    closing and re-entering raise RuntimeError.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        batch_size: int = 16,
        max_inflight: int | None = None,
        algo: str = "phash",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        draft: bool = True,
        start_method: str = "spawn",
        decode_timeout: float = 30.0,
        close_timeout: float = 10.0,
        convert_to: str = "keep",
        method: str = "regions",
        batch_fn: Callable[..., list[Hashed | HashFailure]] | None = None,
    ) -> None:
        resolved = (os.cpu_count() or 1) if workers is None else workers
        self.config = HashPoolConfig(
            workers=resolved,
            batch_size=batch_size,
            max_inflight=max_inflight if max_inflight is not None else 2 * max(resolved, 1),
            algo=algo,
            max_pixels=max_pixels,
            draft=draft,
            start_method=start_method,
            decode_timeout=decode_timeout,
            close_timeout=close_timeout,
            convert_to=convert_to,
            method=method,
        )
        # The per-batch function run in the workers (None: hash_batch, looked up per call).
        self._batch_fn = batch_fn
        self.stats = HashPoolStats()
        #: Pids of the worker processes started on entering (empty in thread mode).
        self.worker_pids: tuple[int, ...] = ()
        self._state = _State.NEW
        self._ready: Queue[int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ProcessPoolExecutor | None = None
        self._pending: deque[_Job] = deque()
        self._flush_handle: asyncio.Handle | None = None
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._consecutive_restarts = 0
        self._submitted = 0  # batches handed to the executor and not finished
        self._warming: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        c = self.config
        return f"<HashPool {self._state.value} workers={c.workers} batch_size={c.batch_size}>"

    async def __aenter__(self) -> Self:
        if self._state is not _State.NEW:
            raise RuntimeError(f"cannot open a HashPool that is {self._state.value}")
        self._loop = asyncio.get_running_loop()
        self._state = _State.OPEN
        if self.config.workers > 0:
            self._executor = self._new_executor()
            try:
                await self._start_workers(self._executor)
            except BaseException:
                await self.aclose()
                raise
        return self

    async def _start_workers(self, executor: ProcessPoolExecutor) -> None:
        """Start every worker now and wait until each has run its initializer.

        Failing here (a worker that cannot import or start) beats failing mid-crawl, and the
        first batches do not wait for process start-up. A fresh executor has no idle worker,
        so each of these submissions starts one process.
        """
        assert self._loop is not None
        ready = self._ready
        assert ready is not None
        n = self.config.workers
        calls = [self._loop.run_in_executor(executor, os.getpid) for _ in range(n)]
        abandoned = threading.Event()

        def collect() -> tuple[int, ...]:
            # Short waits, so that a start given up below does not leave this thread blocked
            # (the interpreter joins it at exit) for the rest of the start timeout.
            pids: list[int] = []
            deadline = time.monotonic() + _START_TIMEOUT
            while len(pids) < n and not abandoned.is_set():
                try:
                    pids.append(ready.get(timeout=0.1))
                except queue.Empty:
                    if time.monotonic() > deadline:
                        raise
            return tuple(pids)

        collector = asyncio.ensure_future(asyncio.to_thread(collect))
        started = asyncio.gather(*calls)
        try:
            # A worker that dies while starting (an import error, a crash) breaks the pool:
            # the submitted calls fail at once, and so does the start, instead of waiting for
            # the timeout.
            waiting: set[asyncio.Future[Any]] = {collector, started}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if started.done() and started.exception() is not None:
                raise RuntimeError("a hash worker died while starting") from started.exception()
            try:
                self.worker_pids = await collector
            except queue.Empty as exc:
                raise RuntimeError(
                    f"hash workers did not start within {_START_TIMEOUT} s"
                ) from exc
            await started
        finally:
            abandoned.set()
            for future in (collector, started):
                if future.done() and not future.cancelled():
                    future.exception()  # retrieved: reported above, or moot
                else:
                    future.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def hash(self, data: bytes) -> Hashed | HashFailure:
        """Hash one image's bytes (see :func:`hash_image`) in the pool."""
        if self._state is not _State.OPEN or self._loop is None:
            raise RuntimeError(f"HashPool is {self._state.value}; use 'async with HashPool()'")
        future: asyncio.Future[Hashed | HashFailure] = self._loop.create_future()
        self._pending.append(_Job(data, future))
        if len(self._pending) >= self.config.batch_size:
            self._dispatch()
        elif self._flush_handle is None:
            # Let every caller that is ready in this loop iteration join the batch first.
            self._flush_handle = self._loop.call_soon(self._flush)
        return await future

    async def aclose(self) -> None:
        """Stop accepting work, finish batches in flight, shut the workers down. Idempotent."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if self._warming is not None:
            self._warming.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError("HashPool closed before hashing this image"))
        try:
            if self._tasks:
                _, late = await asyncio.wait(set(self._tasks), timeout=self.config.close_timeout)
                if late:
                    logger.warning(
                        "%d hash batches still running %.0f s after close; killing the workers",
                        len(late), self.config.close_timeout,
                    )  # fmt: skip
                    if self._executor is not None:
                        _kill_workers(self._executor)
                    for task in late:
                        task.cancel()
        except asyncio.CancelledError:
            for task in self._tasks:
                task.cancel()
            raise
        finally:
            executor, self._executor = self._executor, None
            if self._ready is not None:
                self._ready.close()
            if executor is not None:
                # shutdown(wait=True) joins the worker processes: never on the event loop.
                await asyncio.shield(
                    asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
                )

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_state", None) is _State.OPEN:
            _warn(f"unclosed {self!r}", ResourceWarning, source=self, stacklevel=1)
            executor = getattr(self, "_executor", None)
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)

    # -- batching ---------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_handle = None
        self._dispatch()

    def _dispatch(self) -> None:
        assert self._loop is not None
        while self._pending and self._inflight < self.config.max_inflight:
            batch: list[_Job] = []
            while self._pending and len(batch) < self.config.batch_size:
                job = self._pending.popleft()
                if not job.future.done():  # the caller was cancelled while waiting
                    batch.append(job)
            if not batch:
                continue
            self._inflight += 1
            self.stats.peak_inflight = max(self.stats.peak_inflight, self._inflight)
            task = self._loop.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._inflight -= 1
        if self._state is _State.OPEN:
            self._dispatch()

    async def _run(self, batch: list[_Job]) -> None:
        self.stats.batches += 1
        self.stats.images += len(batch)
        try:
            results = await self._execute([job.data for job in batch], attempt=1)
        except asyncio.CancelledError:
            for job in batch:
                job.future.cancel()
            raise
        except Exception as exc:
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        for job, result in zip(batch, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)

    async def _execute(self, items: list[bytes], attempt: int) -> list[Hashed | HashFailure]:
        c = self.config
        fn = self._batch_fn or hash_batch
        call = functools.partial(
            fn, items, c.algo, c.max_pixels, c.draft, c.convert_to, c.method
        )
        if c.workers == 0:
            return await asyncio.to_thread(call)
        if self._warming is not None:
            await self._warming  # a replacement pool is starting: its start is not decoding
        executor = self._executor
        if executor is None:
            raise RuntimeError("HashPool is closed")
        assert self._loop is not None
        hung = False
        # A batch queued behind others (at most max_inflight are in the executor) gets their
        # time too: the clock must measure decoding, not the wait for a free worker.
        ahead = max(0, self._submitted - c.workers)
        limit = (c.decode_timeout + len(items)) * (1 + ahead)
        self._submitted += 1
        try:
            work = self._loop.run_in_executor(executor, call)
            done, _ = await asyncio.wait({work}, timeout=limit)
            if not done and self._executor is executor:
                # A decoder is stuck (a pathological file): kill the workers; the batch then
                # fails like a crash and its images are retried one at a time.
                hung = True
                logger.warning(
                    "a hash batch of %d images took over %.0f s; killing the workers",
                    len(items), limit,
                )  # fmt: skip
                _kill_workers(executor)
            results = await work
        except BrokenProcessPool:
            if self._replace_executor(executor):
                self._warming = asyncio.ensure_future(self._warm_up())
            if self._warming is not None:
                await asyncio.shield(self._warming)
            if len(items) == 1 and attempt >= _MAX_ATTEMPTS:
                if hung:
                    logger.warning("an image hung the decoder %d times; giving up", attempt)
                    return [
                        HashFailure(
                            ErrorClass.DECODE_TIMEOUT,
                            f"decoding took over {c.decode_timeout:g} s",
                        )
                    ]
                logger.warning("an image crashed the hash worker %d times; giving up", attempt)
                return [HashFailure(ErrorClass.NOT_AN_IMAGE, "the decoder crashed on this image")]
            # Any in-flight batch fails when one worker dies: find the culprit by going single.
            out: list[Hashed | HashFailure] = []
            for item in items:
                out.extend(await self._execute([item], attempt + 1))
            return out
        finally:
            self._submitted -= 1
        self._consecutive_restarts = 0
        return results

    def _new_executor(self) -> ProcessPoolExecutor:
        context = get_context(self.config.start_method)
        if self._ready is not None:
            self._ready.close()
        self._ready = context.Queue()
        return ProcessPoolExecutor(
            max_workers=self.config.workers,
            mp_context=context,
            initializer=worker_initializer,
            initargs=(self._ready,),
        )

    async def _warm_up(self) -> None:
        """Start the replacement pool's workers before any batch is timed on it."""
        executor = self._executor
        try:
            if executor is not None:
                await self._start_workers(executor)
        except Exception:
            logger.warning("the replacement hash workers did not start", exc_info=True)
        finally:
            self._warming = None

    def _replace_executor(self, broken: ProcessPoolExecutor) -> bool:
        """Swap a broken process pool for a new one (once, however many batches saw it);
        True if this call replaced it."""
        if self._state is not _State.OPEN:
            raise RuntimeError("HashPool closed while a worker process died")
        if self._executor is not broken:
            return False  # another batch already replaced it
        self._consecutive_restarts += 1
        if self._consecutive_restarts > _MAX_CONSECUTIVE_RESTARTS:
            raise BrokenProcessPool(
                f"hash workers died {self._consecutive_restarts} times in a row without "
                "completing a batch; giving up"
            )
        logger.warning("a hash worker process died; starting a new pool")
        broken.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor()
        self.stats.restarts += 1
        return True


def _kill_workers(executor: ProcessPoolExecutor) -> None:
    """SIGKILL the executor's worker processes (it then reports itself broken)."""
    # ProcessPoolExecutor has no public way to stop a running call; its process table is the
    # one handle on the workers (stable since Python 3.2).
    processes = getattr(executor, "_processes", None) or {}
    for process in list(processes.values()):
        with contextlib.suppress(OSError, ValueError):
            process.kill()
