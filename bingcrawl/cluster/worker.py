"""What runs on the cluster's nodes: the download/hash workers and the one API limiter.

Both are plain classes here; :mod:`bingcrawl.cluster.engine` makes them Ray actors (so this
module imports nothing of Ray, and its logic is tested without a cluster).

:class:`FetchWorker` downloads and hashes candidates, and writes the ones the driver decides
to store. It talks to the driver in batches, through two calls: :meth:`FetchWorker.submit`
hands it a list of commands and returns at once; :meth:`FetchWorker.poll` waits for results
and returns every result ready. One Ray call per image would cost the driver ~0.5 ms of CPU
(measured here); batches cost that per batch. The bytes of a decoded image stay in the worker
that downloaded it, under a token, until the driver's decision: ``put`` writes them (the
image's file or shard member), ``drop`` forgets them. Only hashes and metadata travel.

:class:`LimiterActor` wraps the engine's :class:`~bingcrawl.engine.ratelimit.RateLimiter`:
one actor per search key (named after a digest of it, never the key) is the cluster's one
QPS limit and its shared 429 pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from bingcrawl.engine.crawler import WorkshopSpec
from bingcrawl.engine.ratelimit import RateLimiter
from bingcrawl.fetch.download import Downloader
from bingcrawl.imaging.hashpool import HashPool
from bingcrawl.records import Candidate, DownloadFailure, Hashed, HashFailure
from bingcrawl.store.sinks import ImageSink

__all__ = ["Command", "FetchWorker", "LimiterActor", "Result", "WorkerSpec"]

log = logging.getLogger(__name__)

#: A command: ``("fetch", rid, candidate)``, ``("put", rid, token, candidate, hashed,
#: fetched_at)`` or ``("drop", token)``.
Command = tuple[Any, ...]
#: A result: ``(rid, kind, payload)``; kinds: ``hashed`` (token, hashed without its body,
#: attempts, downloaded bytes), ``failed`` (a DownloadFailure, or a HashFailure with attempts
#: and size), ``placed`` (a Placed), ``oserror`` (errno, message), ``valueerror`` (message),
#: ``lost`` (the token is unknown: this worker restarted since).
Result = tuple[int, str, Any]

#: Seconds a poll gathers further results after the first one (fewer, larger batches).
COALESCE = 0.003
#: Results per poll at most.
MAX_BATCH = 512


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """One worker: its workshop (never the search key), its number and its log level. Its
    ``workshop.series`` (``w<index>``) makes its shard names its own."""

    workshop: WorkshopSpec
    index: int = 0
    log_level: int = logging.WARNING


class FetchWorker:
    """One download/hash/write worker (a Ray actor with an asyncio loop)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        # A restarted worker starts from token 1 with no bytes held: a token of its earlier
        # life finds nothing ("lost"), and the driver's channel life says so first.
        self._tokens = itertools.count(1)
        self._bodies: dict[int, tuple[bytes, Hashed]] = {}
        self._results: list[Result] = []
        self._ready: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writes: set[asyncio.Task[None]] = set()
        self._stack: AsyncExitStack | None = None
        self._start: asyncio.Task[None] | None = None
        self._downloader: Downloader
        self._hasher: HashPool
        self._sink: ImageSink
        logging.basicConfig(level=spec.log_level)

    async def _started(self) -> None:
        if self._start is None:
            self._start = asyncio.ensure_future(self._open())
        await asyncio.shield(self._start)

    async def _open(self) -> None:
        self._ready = asyncio.Event()
        stack = AsyncExitStack()
        self._hasher, self._downloader, self._sink = await self.spec.workshop.open(stack)
        self._stack = stack

    async def ping(self) -> int:
        """This worker's process id, once it is ready for work."""
        await self._started()
        return os.getpid()

    async def submit(self, commands: list[Command]) -> None:
        """Start every command; results come back through :meth:`poll`."""
        await self._started()
        for command in commands:
            if command[0] == "drop":
                self._bodies.pop(command[1], None)
                continue
            task = asyncio.ensure_future(self._run(command))
            tasks = self._writes if command[0] == "put" else self._tasks
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def poll(self, wait: float = 1.0) -> list[Result]:
        """Results ready since the last poll; waits up to ``wait`` s for the first one."""
        await self._started()
        assert self._ready is not None
        if not self._results:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), wait)
            if self._results:
                await asyncio.sleep(COALESCE)  # let a few more join this batch
        batch, self._results = self._results[:MAX_BATCH], self._results[MAX_BATCH:]
        if not self._results:
            self._ready.clear()
        return batch

    def _emit(self, result: Result) -> None:
        self._results.append(result)
        assert self._ready is not None
        self._ready.set()

    async def _run(self, command: Command) -> None:
        rid = command[1]
        try:
            if command[0] == "fetch":
                self._emit((rid, *await self._fetch(command[2])))
            elif command[0] == "put":
                _, _, token, candidate, hashed, fetched_at = command
                self._emit((rid, *await self._put(token, candidate, hashed, fetched_at)))
            else:
                self._emit((rid, "valueerror", f"unknown command {command[0]!r}"))
        except Exception as exc:  # reported to the driver, which logs it
            log.exception("worker %d: %s failed", self.spec.index, command[0])
            self._emit((rid, "error", f"{type(exc).__name__}: {exc}"))

    async def _fetch(self, candidate: Candidate) -> tuple[str, Any]:
        fetched = await self._downloader.fetch(candidate)
        if isinstance(fetched, DownloadFailure):
            return "failed", fetched
        hashed = await self._hasher.hash(fetched.body)
        if isinstance(hashed, HashFailure):
            return "failed", (hashed, fetched.attempts, len(fetched.body))
        body = fetched.body if hashed.body is None else hashed.body  # (--convert-to)
        token = next(self._tokens)
        self._bodies[token] = (body, hashed)
        light = Hashed(
            hashed.sha256, hashed.phash, hashed.width, hashed.height,
            hashed.format, hashed.ext, hashed.size, centre=hashed.centre,
        )  # fmt: skip
        return "hashed", (token, light, fetched.attempts, len(fetched.body), time.time())

    async def _put(
        self, token: int, candidate: Candidate, hashed: Hashed, fetched_at: float | None
    ) -> tuple[str, Any]:
        held = self._bodies.pop(token, None)
        if held is None:
            return "lost", None
        body, full = held
        try:
            placed = await self._sink.put(candidate, full, body, fetched_at)
        except OSError as exc:
            return "oserror", (exc.errno, exc.strerror or str(exc))
        except ValueError as exc:
            return "valueerror", str(exc)
        return "placed", placed

    async def stop(self) -> int:
        """Finish the writes under way, abandon the downloads (nobody waits for them any
        more), close everything; the bytes still held are dropped. Returns how many images
        were held."""
        held = len(self._bodies)
        self._bodies.clear()
        for task in self._tasks:
            task.cancel()
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=60)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()
        return held


class LimiterActor:
    """The cluster's one API limiter (see :class:`~bingcrawl.engine.ratelimit.RateLimiter`)."""

    def __init__(self, qps: float) -> None:
        self.limiter = RateLimiter(qps)

    async def acquire(self) -> float:
        """Wait for a grant; returns the seconds left of a pause (for the driver's display)."""
        await self.limiter.acquire()
        return self.limiter.paused_for()

    async def pause(self, seconds: float) -> float:
        """Pause every caller ``seconds``; returns the pause left."""
        self.limiter.pause(seconds)
        return self.limiter.paused_for()

    async def set_qps(self, qps: float) -> None:
        """A new rate (a later job with another ``--qps`` for the same key)."""
        if qps != self.limiter.qps:
            paused = self.limiter.paused_for()
            self.limiter = RateLimiter(qps)
            self.limiter.pause(paused)

