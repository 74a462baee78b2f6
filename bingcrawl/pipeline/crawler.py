"""The crawler: owns every resource of a crawl and runs the stages.

``Crawler`` is the one async context manager that opens, in order, the checkpoint (with its
start-up recovery), the dedup index rebuilt from it, the hash pool, the image downloader and
the API client with its limiter, and closes them in reverse (``AsyncExitStack``).
:meth:`Crawler.run` then runs the producer (:func:`~bingcrawl.pipeline.producers.run_sources`,
which runs every source), the bounded frontier and the download workers under
``asyncio.TaskGroup``s.

Stopping: the end of the sources closes the frontier so workers drain it; a quota closes it
the same way after cancelling the producers; :meth:`Crawler.request_stop` (a signal) cancels
the producers, stops handing out queued work and gives in-flight downloads ``grace`` seconds;
a second request cancels the workers at once. In every case the checkpoint is flushed and the
manifest and stats are written before :meth:`run` returns or raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from bingcrawl.config import CrawlConfig
from bingcrawl.errors import (
    AuthenticationError,
    BingCrawlError,
    ConfigError,
    Interrupted,
    QuotaExceededError,
    UnsafePathError,
)
from bingcrawl.obs.logs import bind, current_context
from bingcrawl.obs.metrics import MetricsSnapshot
from bingcrawl.pipeline.crashpoints import CrashPoints
from bingcrawl.pipeline.dedup import DedupIndex
from bingcrawl.pipeline.download import Downloader
from bingcrawl.pipeline.frontier import Frontier
from bingcrawl.pipeline.hashing import HashPool
from bingcrawl.pipeline.producers import default_producers
from bingcrawl.pipeline.progress import Counters, ProgressReporter
from bingcrawl.pipeline.ratelimit import ApiGate, RateLimiter, RetryPolicy
from bingcrawl.records import (
    Candidate,
    DownloadFailure,
    Hashed,
    HashFailure,
    Outcome,
    Status,
)
from bingcrawl.store.atomic import ImageFileWriter
from bingcrawl.store.checkpoint import Checkpoint
from bingcrawl.store.output import write_manifest, write_stats
from bingcrawl.store.shards import ShardWriter

__all__ = ["CrawlReport", "Crawler", "QueryState"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class QueryState:
    """Per-query bookkeeping shared by its producer and the workers.

    ``stored`` counts stored images *and* reservations of images being written, so the
    ``--limit`` check and the reservation happen without an await between them.
    ``downloading`` counts this query's downloads in progress: a worker does not start one
    while stored + downloading already reach the limit (it would most likely be thrown away).
    """

    id: int
    label: str
    text: str
    limit: int
    stored: int = 0
    outstanding: int = 0
    downloading: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def needs_more(self) -> bool:
        """True while stored + queued candidates fall short of the limit."""
        return self.stored + self.outstanding < self.limit

    def full(self) -> bool:
        """True once the query has its ``--limit`` of stored images."""
        return self.stored >= self.limit

    def may_download(self) -> bool:
        """True if one more download of this query could still be stored."""
        return self.stored + self.downloading < self.limit

    async def wait_change(self) -> None:
        """Wait until the next :meth:`notify` (an outcome, a finished download)."""
        await self._changed.wait()

    def notify(self) -> None:
        """Wake every waiter. Each wait uses the event current when it began, so a waiter
        that checks its condition and then waits (no await in between) never misses one."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def settle(self) -> None:
        """One of this query's candidates has its outcome: wake the producer."""
        self.outstanding = max(0, self.outstanding - 1)
        self.notify()


@dataclass(frozen=True, slots=True)
class CrawlReport:
    """What :meth:`Crawler.run` returns (and writes to ``stats.json``)."""

    stats: dict[str, Any]
    quota_exhausted: bool = False


Producer = Callable[["Crawler"], Coroutine[Any, Any, None]]


class Crawler:
    """Runs one crawl into ``config.out``; re-running with the same config resumes it."""

    def __init__(self, config: CrawlConfig, *, producers: list[Producer] | None = None) -> None:
        self.config = config
        self.out = Path(config.out)
        self.counters = Counters()
        self.frontier: Frontier[Candidate] = Frontier(config.queue_size)
        self.queries: dict[int, QueryState] = {}
        self._producers = producers
        self._stack: AsyncExitStack | None = None
        self._state = "new"
        self._stop_signal: int | None = None
        self._producer_task: asyncio.Task[None] | None = None
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._quota_error: QuotaExceededError | None = None
        self._finished = False
        # The CLI binds a run id before the first log line; a library caller gets a fresh one.
        self.run_id = str(current_context().get("run_id") or uuid.uuid4().hex[:12])
        self.crash = CrashPoints.parse(config.crash_at)
        self.checkpoint: Checkpoint
        self.dedup: DedupIndex
        self.hasher: HashPool
        self.downloader: Downloader
        self.gate: ApiGate
        self.shards: ShardWriter | None = None
        self.files: ImageFileWriter
        self.calls_before = 0

    # -- resources -----------------------------------------------------------------------

    async def __aenter__(self) -> Crawler:
        if self._state != "new":
            raise RuntimeError("a Crawler cannot be reopened; make a new one")
        self._state = "open"
        stack = AsyncExitStack()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            images = self.out / "images"
            if images.is_symlink():
                raise UnsafePathError(f"{images} is a symlink; refusing to write through it")
            images.mkdir(exist_ok=True)
            self.checkpoint = await stack.enter_async_context(
                await Checkpoint.open(self.out, durable=self.config.durable)
            )
            await self.checkpoint.check_fingerprint(
                self.config.fingerprint(), fresh=self.config.fresh
            )
            await self.checkpoint.recover(self.out)  # logs what it repaired
            # ~1 s per million stored images, in a reader thread, streamed from the cursor
            self.dedup = await self.checkpoint.read_stored_hashes(
                functools.partial(DedupIndex.rebuild, near_distance=self.config.near_dup_distance)
            )
            self.hasher = await stack.enter_async_context(
                HashPool(
                    self.config.hash_workers,
                    algo=self.config.hash_algo,
                    max_pixels=self.config.max_pixels,
                )
            )
            self.downloader = await stack.enter_async_context(Downloader(self.config.download))
            files = ImageFileWriter(self.out, durable=self.config.durable)
            stack.callback(files.close)
            self.files = files
            if self.config.output_format == "webdataset":
                shards = ShardWriter(
                    self.out,
                    shard_size=self.config.shard_size,
                    group_by=self.config.shard_by,
                    durable=self.config.durable,
                )
                stack.callback(shards.close)
                self.shards = shards
            self.calls_before = self.checkpoint.api_calls_total
            self.gate = ApiGate(
                RateLimiter(self.config.qps),
                policy=RetryPolicy(
                    max_retries=self.config.api_retries, backoff_base=self.config.api_backoff
                ),
                max_calls=self.config.max_api_calls,
                calls_before=self.calls_before,
            )
        except BaseException:
            await stack.aclose()
            self._state = "closed"
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every resource in reverse order; closing twice is harmless."""
        if self._state == "closed":
            return
        self._state = "closed"
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await asyncio.shield(stack.aclose())

    def enter_context(self) -> AsyncExitStack:
        """The exit stack, for sources that own a resource (the API client)."""
        if self._stack is None:
            raise RuntimeError("the Crawler is not open")
        return self._stack

    # -- control -------------------------------------------------------------------------

    def request_stop(self, signum: int) -> None:
        """Stop on a signal: first time gracefully, second time at once."""
        if self._stop_signal is None:
            self._stop_signal = signum
            log.warning("signal %d: stopping (again to stop at once)", signum)
            if self._producer_task is not None:
                self._producer_task.cancel()
            asyncio.get_running_loop().create_task(self._graceful_stop())
        else:
            log.warning("second signal: stopping now")
            for task in self._worker_tasks:
                task.cancel()

    async def _graceful_stop(self) -> None:
        await self.frontier.close(drain=False)
        if self._worker_tasks:
            _, pending = await asyncio.wait(self._worker_tasks, timeout=self.config.grace)
            for task in pending:
                task.cancel()

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> CrawlReport:
        """Crawl until every source is done, the quota ends, or a stop is requested."""
        if self._state != "open":
            raise RuntimeError("use `async with Crawler(config) as crawler:` before run()")
        bind(run_id=self.run_id)
        reporter = asyncio.create_task(
            ProgressReporter(self.counters, live=self.config.progress).run()
        )
        error: BaseException | None = None
        try:
            await self._run_stages()
        except BaseExceptionGroup as group:
            # Report the error that matters (e.g. AuthenticationError), not the group that
            # the task groups wrapped it in.
            error = most_significant(group)
            if error is group:
                raise
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            stats = await asyncio.shield(self._finish())
            self._finished = True
        if error is not None:
            raise error
        if self._stop_signal is not None:
            raise Interrupted(self._stop_signal)
        if self._quota_error is not None:
            raise self._quota_error
        return CrawlReport(stats=stats)

    async def _run_stages(self) -> None:
        producers = self._producers
        if producers is None:
            producers = default_producers(self)
        async with asyncio.TaskGroup() as workers:
            self._worker_tasks = [
                workers.create_task(self._worker(), name=f"worker-{i}")
                for i in range(self.config.download.concurrency)
            ]
            self._producer_task = asyncio.create_task(self._produce(producers))
            try:
                await self._producer_task
            except asyncio.CancelledError:
                if self._stop_signal is None:
                    raise
            finally:
                await self.frontier.close(drain=self._stop_signal is None)

    async def _produce(self, producers: list[Producer]) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for producer in producers:
                    tg.create_task(producer(self))
        except* QuotaExceededError as group:
            exc = leaves(group)[0]
            assert isinstance(exc, QuotaExceededError)
            self._quota_error = exc
            log.warning("API quota exhausted (%s): finishing queued downloads", exc)

    def metrics_snapshot(self) -> MetricsSnapshot:
        """Live counters for the metrics endpoint (see :mod:`bingcrawl.obs.metrics`)."""
        c = self.counters
        queries = Counter("done" if s.full() else "active" for s in self.queries.values())
        return MetricsSnapshot(
            api_calls=c.api_by_status,
            outcomes={
                "stored": c.stored,
                "duplicate": c.duplicates,
                "failed": c.failed,
                "skipped": c.skipped,
            },
            errors=c.errors,
            bytes=c.bytes,
            queue_depth=len(self.frontier),
            in_flight=c.in_flight,
            images_per_s=c.recent.rate(),
            queries=queries,
            last_progress=c.last_progress,
            state=self.run_state,
        )

    @property
    def run_state(self) -> str:
        """``starting``, ``running``, ``stopping`` or ``done``."""
        if self._state == "closed" or self._finished:
            return "done"
        if self._stop_signal is not None:
            return "stopping"
        return "running" if self._worker_tasks else "starting"

    # -- helpers for producers -----------------------------------------------------------

    async def enqueue(self, state: QueryState, candidates: list[Candidate]) -> None:
        """Hand checkpointed candidates to the workers (waits while the frontier is full)."""
        for candidate in candidates:
            state.outstanding += 1
            if not await self.frontier.put(candidate):
                state.outstanding -= 1
                return

    def query_state(self, row_id: int, label: str, text: str, stored: int) -> QueryState:
        """Register (or return) the live state of a checkpointed query."""
        state = self.queries.get(row_id)
        if state is None:
            state = QueryState(row_id, label, text, self.config.limit, stored=stored)
            self.queries[row_id] = state
        return state

    # -- workers -------------------------------------------------------------------------

    async def _worker(self) -> None:
        while (candidate := await self.frontier.get()) is not None:
            self.counters.in_flight += 1
            try:
                outcome = await self._process(candidate)
            finally:
                self.counters.in_flight -= 1
            self._record(outcome)

    def _record(self, outcome: Outcome) -> None:
        self.checkpoint.record_outcome(outcome)
        self.crash.hit("outcome_recorded")
        c = self.counters
        c.progressed()
        if outcome.status is Status.STORED:
            c.stored += 1
            c.recent.add(1)
            if c.first_stored_at is None:
                c.first_stored_at = time.monotonic()
        elif outcome.status is Status.DUPLICATE:
            c.duplicates += 1
            if outcome.distance:
                c.near_duplicates += 1
        elif outcome.status is Status.FAILED:
            c.failed += 1
            c.errors[str(outcome.error_class or "unknown")] += 1
        elif outcome.status is Status.SKIPPED:
            c.skipped += 1
        state = self.queries.get(outcome.candidate.query_id)
        if state is not None:
            state.settle()

    async def _process(self, candidate: Candidate) -> Outcome:
        state = self.queries.get(candidate.query_id)
        if state is None:
            return await self._fetch_and_store(candidate, None)
        # Start a download only if it could still be stored under --limit: downloads in
        # progress (until their outcome is decided) count against the limit too.
        while not state.may_download():
            if state.full():
                return Outcome(candidate, Status.SKIPPED)
            await state.wait_change()
        state.downloading += 1
        try:
            return await self._fetch_and_store(candidate, state)
        finally:
            state.downloading -= 1
            state.notify()

    async def _fetch_and_store(self, candidate: Candidate, state: QueryState | None) -> Outcome:
        fetched = await self.downloader.fetch(candidate)
        if isinstance(fetched, DownloadFailure):
            return Outcome(
                candidate,
                Status.FAILED,
                attempts=fetched.attempts,
                error_class=fetched.error_class,
                detail=fetched.detail,
                fetched_at=time.time(),
            )
        self.counters.downloaded += 1
        self.counters.bytes += len(fetched.body)
        self.crash.hit("downloaded")
        hashed = await self.hasher.hash(fetched.body)
        now = time.time()
        if isinstance(hashed, HashFailure):
            return Outcome(
                candidate,
                Status.FAILED,
                attempts=fetched.attempts,
                error_class=hashed.error_class,
                detail=hashed.detail,
                size=len(fetched.body),
                fetched_at=now,
            )
        common: dict[str, Any] = {
            "attempts": fetched.attempts,
            "sha256": hashed.sha256,
            "phash": hashed.phash,
            "width": hashed.width,
            "height": hashed.height,
            "format": hashed.format,
            "size": hashed.size,
            "fetched_at": now,
        }
        # The limit check, the dedup decision and the reservation happen with no await
        # between them, so concurrent workers can neither exceed --limit nor both store
        # copies of one picture.
        if state is not None and state.full():
            return Outcome(candidate, Status.SKIPPED, **common)
        match = self.dedup.check_and_add(hashed.sha256, hashed.phash)
        if match is not None:
            return Outcome(
                candidate,
                Status.DUPLICATE,
                duplicate_of=match.sha256,
                distance=match.distance,
                **common,
            )
        if state is not None:
            state.stored += 1
        try:
            where = await self._store(candidate, hashed, fetched.body)
        except (OSError, ValueError) as exc:
            self.dedup.discard(hashed.sha256)
            if state is not None:
                state.stored -= 1
            return Outcome(
                candidate,
                Status.FAILED,
                error_class="write_error",
                detail=str(exc)[:200],
                **common,
            )
        self.crash.hit("file_written")
        return Outcome(candidate, Status.STORED, **where, **common)

    async def _store(self, candidate: Candidate, hashed: Hashed, body: bytes) -> dict[str, Any]:
        """Put the image in place (a file, or a shard member); returns the Outcome's location."""
        key = hashed.sha256[:16]
        if self.shards is None:
            written = self.files.submit(candidate.label, f"{key}.{hashed.ext}", body)
            return {"path": await asyncio.wrap_future(written)}
        meta = {
            "label": candidate.label,
            "query": candidate.query,
            "source": str(candidate.source),
            "content_url": candidate.url,
            "host_page_url": candidate.host_page_url,
            "image_id": candidate.image_id,
            "name": candidate.name,
            "license": candidate.license,
            "sha256": hashed.sha256,
            "phash": f"{hashed.phash:016x}",
            "width": hashed.width,
            "height": hashed.height,
            "format": hashed.format,
        }
        future = self.shards.submit(candidate.label, key, hashed.ext, body, meta)
        placed = await asyncio.wrap_future(future)
        return {"path": placed.path, "shard_offset": placed.offset, "shard_end": placed.end}

    # -- end of run ----------------------------------------------------------------------

    async def _finish(self) -> dict[str, Any]:
        await self.checkpoint.flush()
        snapshot = self.counters.snapshot()
        snapshot["api_calls"] = self.gate.calls - self.calls_before
        snapshot["api_throttled"] = self.gate.throttled
        snapshot["stopped_by_signal"] = self._stop_signal
        snapshot["quota_exhausted"] = self._quota_error is not None
        durable = self.config.durable
        await asyncio.to_thread(write_manifest, self.checkpoint, self.out, durable=durable)
        return await asyncio.to_thread(
            write_stats, self.checkpoint, self.out, extra={"run": snapshot}, durable=durable
        )


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The non-group exceptions inside ``group``, depth first."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(leaves(exc))
        else:
            found.append(exc)
    return found


def most_significant(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error a task group's failure should be reported as.

    A bingcrawl error wins over the cancellations it caused; among bingcrawl errors the
    priority is authentication, configuration, quota, then the first one. If anything else is
    in the group (a bug), the group itself is returned, to be re-raised whole.
    """
    found = [e for e in leaves(group) if not isinstance(e, asyncio.CancelledError)]
    if not found or not all(isinstance(e, BingCrawlError) for e in found):
        return group
    for kind in (AuthenticationError, ConfigError, QuotaExceededError):
        for exc in found:
            if isinstance(exc, kind):
                return exc
    return found[0]
