"""The crawler: owns every resource of a crawl and runs the stages.

``Crawler`` is the one async context manager that opens, in order, the checkpoint (with its
start-up recovery), the dedup index rebuilt from it, the hash pool, the image downloader and
the API client with its limiter, and closes them in reverse (``AsyncExitStack``).
:meth:`Crawler.run` then runs the producer (:func:`~bingcrawl.sources.runner.run_sources`,
which runs every source), the bounded frontier and the download workers under
``asyncio.TaskGroup``s.

Stopping: the end of the sources closes the frontier so workers drain it; a quota, an
unreachable API or queries left on API errors close it the same way once the producers are
done (then :meth:`run` raises that error); :meth:`Crawler.request_stop` (a signal) and a
storage fault (a full disk: :class:`~bingcrawl.errors.StorageError`) cancel the producers,
stop handing out queued work and give in-flight downloads ``grace`` seconds; a second signal
cancels the workers at once. In every case the checkpoint is flushed and the manifest and
stats are written before :meth:`run` returns or raises.

Invariants the workers keep (each has its regression test in ``tests/e2e/test_defects.py``):

* a candidate is stored, a duplicate of a *stored* image, failed, skipped, or still pending:
  a duplicate is committed only after the image it names is stored (if that write fails, the
  copy is decided again), and a storage fault leaves the image pending, never failed;
* writing a file and recording its outcome are one unit, shielded from cancellation and
  awaited before the checkpoint is flushed: no file is left without its row;
* a worker never waits for a query at its ``--limit``: surplus candidates are parked on the
  query and taken up (or skipped) by the worker that ends one of its downloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import logging
import shutil
import signal
import sqlite3
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

from yarl import URL

from bingcrawl.config import CrawlConfig, prepare_out_dir
from bingcrawl.dedup.index import DedupIndex
from bingcrawl.engine.crashpoints import CrashPoints
from bingcrawl.engine.frontier import Frontier
from bingcrawl.engine.ratelimit import ApiGate, Limiter, RateLimiter, RetryPolicy
from bingcrawl.errors import (
    ApiConnectionError,
    AuthenticationError,
    BingCrawlError,
    CheckpointError,
    ConfigError,
    IncompleteCrawlError,
    Interrupted,
    QuotaExceededError,
    StorageError,
    UnsafePathError,
)
from bingcrawl.events import Downloaded, Event, Events, FileWritten, OutcomeRecorded
from bingcrawl.fetch.download import DEFAULT_USER_AGENT, DownloadConfig, Downloader
from bingcrawl.fetch.etiquette import SIGNALS
from bingcrawl.imaging.hashpool import HashPool
from bingcrawl.obs.logs import bind, current_context
from bingcrawl.obs.metrics import MetricsSnapshot
from bingcrawl.obs.progress import Counters, ProgressReporter
from bingcrawl.records import (
    NEAR_DUP_METHODS,
    Candidate,
    DownloadFailure,
    ErrorClass,
    Hashed,
    HashFailure,
    Outcome,
    Status,
)
from bingcrawl.sources.runner import run_sources
from bingcrawl.store.checkpoint import Checkpoint
from bingcrawl.store.output import write_stats
from bingcrawl.store.recovery import StartupStopped
from bingcrawl.store.sinks import ImageSink, Placed, open_sink

__all__ = [
    "STOPS", "BytesLost", "CrawlReport", "Crawler", "Obtained", "QueryState", "WorkshopSpec",
]  # fmt: skip

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class QueryState:
    """Per-query bookkeeping shared by its producer and the workers.

    ``stored`` counts stored images *and* reservations of images being written, so the
    ``--limit`` check and the reservation happen without an await between them.
    ``downloading`` counts this query's downloads in progress: a worker does not start one
    while stored + downloading already reach the limit (it would most likely be thrown away).
    Such a candidate is ``parked`` instead of waited on (a worker waiting would hold up every
    other query): the worker that ends one of this query's downloads takes it up again, or
    skips it once the query is full.
    """

    id: int
    label: str
    text: str
    limit: int
    stored: int = 0
    outstanding: int = 0
    downloading: int = 0
    parked: deque[Candidate] = field(default_factory=deque)
    writing: int = 0  # of ``stored``: reservations whose write is still under way
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
    """How a run ended, and its figures (the content of ``stats.json``).

    ``reason`` is ``completed``, or why the run stopped early: ``quota`` (the API's monthly
    quota or ``--max-api-calls``), ``interrupted`` (a signal), ``storage`` (the disk refused a
    write), ``unreachable`` (the API could not be reached) or ``incomplete`` (queries stopped
    on API errors). Every early stop is resumable: run the same crawl again. ``error`` is the
    error of an early stop (what :meth:`Crawler.run` raises; :func:`bingcrawl.crawl` returns
    the report instead), ``exit_code`` the command line's exit status for it.
    """

    stats: dict[str, Any]
    quota_exhausted: bool = False
    reason: str = "completed"
    error: BingCrawlError | None = None

    @property
    def completed(self) -> bool:
        """True when the crawl did everything it was asked (``reason == "completed"``)."""
        return self.reason == "completed"

    @property
    def exit_code(self) -> int:
        """The ``bingcrawl crawl`` exit status of this ending (0 when completed)."""
        if self.error is None:
            return 0
        if isinstance(self.error, Interrupted):
            return self.error.code
        return self.error.exit_code

    def _run(self, key: str) -> int:
        run = self.stats.get("run", self.stats)
        return int(run.get(key) or 0)

    @property
    def stored(self) -> int:
        """Images stored by this run."""
        return self._run("stored")

    @property
    def dataset_stored(self) -> int:
        """Images in the whole dataset after this run (earlier runs included)."""
        return self._run("dataset_stored")

    @property
    def duplicates(self) -> int:
        """Candidates this run found to be copies of a stored image."""
        return self._run("duplicates")

    @property
    def failed(self) -> int:
        """Candidates this run could not download or decode."""
        return self._run("failed")

    @property
    def api_calls(self) -> int:
        """API calls this run made."""
        return self._run("api_calls")


def _reason(error: BingCrawlError | None) -> str:
    if error is None:
        return "completed"
    for kind, reason in (
        (QuotaExceededError, "quota"),
        (Interrupted, "interrupted"),
        (StorageError, "storage"),
        (ApiConnectionError, "unreachable"),
        (IncompleteCrawlError, "incomplete"),
    ):
        if isinstance(error, kind):
            return reason
    return "failed"


#: The early stops a run reports (and :func:`bingcrawl.crawl` returns rather than raises):
#: each leaves a consistent, resumable checkpoint.
STOPS = (QuotaExceededError, Interrupted, StorageError, ApiConnectionError, IncompleteCrawlError)


#: errno values of a storage fault that is not the image's fault: the crawl stops cleanly
#: and the image stays pending (a re-run resumes once there is room).
STORAGE_FAULTS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EMFILE, errno.ENFILE, errno.EROFS, errno.EFBIG}
)

#: What to do about each storage fault, for the one line a user reads.
#: The default ``--min-free``: 1 GiB, or 1 % of a smaller filesystem.
MIN_FREE_DEFAULT: Final = 1 << 30


def etiquette_record(config: CrawlConfig, ignored_ever: Sequence[str] = ()) -> dict[str, object]:
    """What the run honoured, for ``stats.json``, and what any run on this OUT ignored: a
    dataset crawled with opt-outs turned off can be told from one that honoured them."""
    etiquette = config.download.etiquette
    return {
        "honoured": [s for s in SIGNALS if s in etiquette.respect],
        "ignored": list(etiquette.ignored),
        "ignored_by_any_run": list(ignored_ever),
        "agent": etiquette.agent,
        "user_agent": config.download.user_agent,
    }


def contact_warning(config: CrawlConfig) -> str | None:
    """The warning a crawl of real image hosts gets when it names no contact (neither
    ``--contact`` nor ``--user-agent``). A crawl that may fetch from loopback
    (``--allow-network 127.0.0.1/32``: the emulator) or asks a loopback endpoint is taken
    for a local one: no warning."""
    if config.download.user_agent != DEFAULT_USER_AGENT:
        return None
    host = (URL(config.endpoint).host or "").strip("[]").lower() if config.endpoint else ""
    local_api = host == "localhost" or host.startswith("127.") or host == "::1"
    if local_api or config.download.policy.is_allowed("127.0.0.1"):
        return None
    return (
        f"no --contact: image hosts see the User-Agent {DEFAULT_USER_AGENT!r} and cannot "
        "reach whoever runs this crawl; add --contact with your URL or e-mail address"
    )


def _min_free(out: Path, asked: int | None) -> int:
    """The free-space floor in bytes: ``asked``, else :data:`MIN_FREE_DEFAULT` or 1 % of
    OUT's filesystem, the smaller."""
    if asked is not None:
        return asked
    return min(MIN_FREE_DEFAULT, shutil.disk_usage(out).total // 100)


def _size(n: int) -> str:
    """Bytes for a person: 1.5 GiB, 300.0 MiB, 12.0 KiB."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


_STORAGE_ADVICE: dict[int, str] = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space or raise the disk quota",
    errno.EMFILE: "raise the open-files limit (ulimit -n)",
    errno.ENFILE: "close other programs or raise the system's open-files limit",
    errno.EROFS: "make the filesystem writable, or choose another --out",
    errno.EIO: "check the disk (an I/O error; the next run re-checks what was written)",
    errno.EFBIG: "use a smaller --shard-size, or a filesystem without a 4 GiB file limit",
}

#: Errors that end the API side of a run but let queued downloads finish first.
_STOPS_PRODUCING = (QuotaExceededError, ApiConnectionError, IncompleteCrawlError)


Producer = Callable[["Crawler"], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class WorkshopSpec:
    """What downloading, hashing and writing images need, and nothing more (never the
    search key): the local crawler opens its parts from it, and so does each worker of a
    distributed engine. ``series`` names a writer's own shard series (see ``open_sink``)."""

    out: Path
    download: DownloadConfig
    hash_workers: int | None
    hash_algo: str
    near_dup_method: str
    max_pixels: int
    convert_to: str
    output_format: str
    shard_size: int
    shard_by: str
    durable: bool
    series: str | None = None

    @classmethod
    def of(cls, config: CrawlConfig) -> WorkshopSpec:
        return cls(
            out=Path(config.out),
            download=config.download,
            hash_workers=config.hash_workers,
            hash_algo=config.hash_algo,
            near_dup_method=config.near_dup_method or NEAR_DUP_METHODS[0],
            max_pixels=config.max_pixels,
            convert_to=config.convert_to,
            output_format=config.output_format,
            shard_size=config.shard_size,
            shard_by=config.shard_by,
            durable=config.durable,
        )

    def hash_pool(self, workers: int | None) -> HashPool:
        """A hash pool of ``workers`` (None: one per CPU; 0: a thread) for these settings."""
        return HashPool(
            workers,
            algo=self.hash_algo,
            max_pixels=self.max_pixels,
            convert_to=self.convert_to,
            method=self.near_dup_method,
        )

    async def open(self, stack: AsyncExitStack) -> tuple[HashPool, Downloader, ImageSink]:
        """The hash pool, the downloader and the sink, closed by ``stack``."""
        hasher = await stack.enter_async_context(self.hash_pool(self.hash_workers))
        downloader = await stack.enter_async_context(Downloader(self.download))
        sink = open_sink(
            self.output_format,
            self.out,
            shard_size=self.shard_size,
            shard_by=self.shard_by,
            durable=self.durable,
            series=self.series,
        )
        stack.callback(sink.close)
        return hasher, downloader, sink


#: The crawler class of each ``--engine`` other than ``local``, as ``module:class`` (imported
#: only when asked for: the Ray engine needs the ``[ray]`` extra).
ENGINE_CLASSES: dict[str, str] = {"ray": "bingcrawl.cluster.engine:RayCrawler"}


class Crawler:
    """Runs one crawl into ``config.out``; re-running with the same config resumes it.

    ``Crawler(config)`` gives the crawler of ``config.engine``: this class for ``local``,
    :class:`bingcrawl.cluster.engine.RayCrawler` for ``ray``.
    """

    def __new__(cls, config: CrawlConfig, **kwargs: Any) -> Crawler:
        if cls is Crawler and config.engine in ENGINE_CLASSES:
            module, _, name = ENGINE_CLASSES[config.engine].partition(":")
            engine = getattr(importlib.import_module(module), name)
            assert issubclass(engine, Crawler)
            cls = engine
        return super().__new__(cls)

    def __init__(
        self,
        config: CrawlConfig,
        *,
        producers: list[Producer] | None = None,
        on_outcome: Callable[[Outcome], object] | None = None,
        on_event: Callable[[Event], object] | None = None,
    ) -> None:
        self.config = config
        self.report: CrawlReport | None = None
        self.out = Path(config.out)
        #: Everything the crawl does, as typed events (see :mod:`bingcrawl.events`).
        self.events = Events()
        self.counters = Counters()
        self.events.subscribe(self.counters.on_event, guarded=False)
        self.crash = CrashPoints.parse(config.crash_at)
        if self.crash.armed:
            self.events.subscribe(self.crash.on_event, guarded=False)
        if on_event is not None:
            self.events.subscribe(on_event)
        if on_outcome is not None:
            self.events.subscribe(_outcomes_to(on_outcome))
        #: Downloads in progress (the metrics endpoint and the idle display read it).
        self.in_flight = 0
        self.frontier: Frontier[Candidate] = Frontier(config.queue_size)
        self.queries: dict[int, QueryState] = {}
        self._producers = producers
        self._stack: AsyncExitStack | None = None
        self._state = "new"
        self._stop_signal: int | None = None
        # Start-up (recovery, the dedup rebuild: long at millions of images) under way: a
        # signal cancels it and tells the threads doing it to stop between two steps.
        self._opening: asyncio.Task[Any] | None = None
        self._ignored_ever: list[str] = []  # opt-outs any run on this OUT ignored
        self._startup_stop = threading.Event()
        self._producer_task: asyncio.Task[None] | None = None
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._stop_task: asyncio.Task[None] | None = None
        self._quota_error: QuotaExceededError | None = None
        self._producer_error: BingCrawlError | None = None
        self._storage_error: StorageError | None = None
        self._min_free = 0  # bytes; decided on entering (see _min_free)
        self._stages_done = False
        self._finished = False
        # Images whose write is under way, by sha256: their near-duplicates wait for the
        # outcome before being committed as duplicates (True: stored; False: not stored).
        self._writing: dict[str, asyncio.Future[bool]] = {}
        # Write-and-record units in progress; shielded from cancellation, awaited at the end.
        self._commits: set[asyncio.Task[bool]] = set()
        # The CLI binds a run id before the first log line; a library caller gets a fresh one.
        self.run_id = str(current_context().get("run_id") or uuid.uuid4().hex[:12])
        self.checkpoint: Checkpoint
        self.dedup: DedupIndex
        self.hasher: HashPool
        self.downloader: Downloader
        self.gate: ApiGate
        self.sink: ImageSink
        self.calls_before = 0

    # -- resources -----------------------------------------------------------------------

    async def _resolve_near_dup_method(self, checkpoint: Checkpoint) -> CrawlConfig:
        """The config with its near-duplicate method decided: a resumed crawl keeps the
        method it was made with (``whole`` for a crawl made before methods existed), a new
        one (or ``--fresh``) uses ``--near-dup-method``, by default ``regions``. Asking a
        resumed crawl for another method is refused, naming both."""
        asked = self.config.near_dup_method
        stored = None if self.config.fresh else await checkpoint.fingerprint()
        if stored is None:
            return replace(self.config, near_dup_method=asked or NEAR_DUP_METHODS[0])
        made_with = str(stored.get("near_dup_method", "whole"))
        if asked is not None and asked != made_with:
            raise ConfigError(
                "--near-dup-method",
                f"{self.out} holds a crawl whose duplicates were decided with {made_with!r}; "
                f"resume it with --near-dup-method {made_with} (or without the option), or "
                f"start over with --fresh to use {asked!r}",
            )
        if asked is None and made_with != NEAR_DUP_METHODS[0]:
            log.info(
                "resuming a crawl made with --near-dup-method %s: it keeps that method "
                "(--fresh starts over with %s)",
                made_with,
                NEAR_DUP_METHODS[0],
            )
        return replace(self.config, near_dup_method=made_with)

    async def __aenter__(self) -> Crawler:
        if self._state != "new":
            raise RuntimeError("a Crawler cannot be reopened; make a new one")
        self._state = "open"
        stack = AsyncExitStack()
        self._opening = asyncio.current_task()
        try:
            prepare_out_dir(self.out)
            self._min_free = _min_free(self.out, self.config.min_free)
            try:
                self._check_free_space()  # before any request: a crawl that cannot write
            except OSError as exc:
                raise StorageError(
                    errno.ENOSPC,
                    f"cannot write under {self.out} ({exc.strerror}): nothing was done; free "
                    "some space (or lower --min-free), then re-run the same command",
                ) from None
            images = self.out / "images"
            if images.is_symlink():
                raise UnsafePathError(f"{images} is a symlink; refusing to write through it")
            images.mkdir(exist_ok=True)
            self.checkpoint = await stack.enter_async_context(
                await Checkpoint.open(self.out, durable=self.config.durable)
            )
            # Insights tokens serve --similar only (which can ask by URL): not kept without it.
            self.checkpoint.tokens = bool(self.config.similar)
            self.config = await self._resolve_near_dup_method(self.checkpoint)
            await self.checkpoint.check_fingerprint(
                self.config.fingerprint(), fresh=self.config.fresh
            )
            if (warning := contact_warning(self.config)) is not None:
                log.warning("%s", warning)
            self._ignored_ever = await self.checkpoint.note_ignored(
                self.config.download.etiquette.ignored
            )
            if ignored := self.config.download.etiquette.ignored:
                log.warning(
                    "publishers' opt-outs not honoured in this run: %s (--ignore / --respect); "
                    "what they ask is your responsibility",
                    ", ".join(ignored),
                )
            # logs what it repaired
            await self.checkpoint.recover(self.out, stop=self._startup_stop)
            # Cuts a torn tail off, lists what a stopped run stored but did not list yet.
            await self.checkpoint.append_manifest()
            # ~1 s per million stored images, in a reader thread, streamed from the cursor
            distance, stop = self.config.near_dup_distance, self._startup_stop
            self.dedup = await self.checkpoint.read_stored_hashes(
                lambda found: DedupIndex.rebuild(_until(found, stop), near_distance=distance)
            )
            await self._open_workshop(stack)
            self.calls_before = self.checkpoint.api_calls_total
            self.counters.stored_before = len(self.dedup)
            # Known at once on a resume (the sources refine it): the display never says 0/0.
            self.counters.queries_total = await self.checkpoint.count_queries()
            self.gate = ApiGate(
                await self._open_limiter(stack),
                policy=RetryPolicy(
                    max_retries=self.config.api_retries, backoff_base=self.config.api_backoff
                ),
                max_calls=self.config.max_api_calls,
                calls_before=self.calls_before,
                ledger=self.checkpoint,
            )
        except BaseException as exc:
            self._opening = None
            self._startup_stop.set()  # (whatever still runs in a thread: stop)
            await stack.aclose()
            self._state = "closed"
            task = asyncio.current_task()
            stopped = isinstance(exc, asyncio.CancelledError | CheckpointError)
            if stopped and self._stop_signal is not None:
                # A signal during start-up: nothing was half-done (the repair rolled back),
                # and the run ends as an interruption, resumable, not as an error.
                if task is not None and task.cancelling():
                    task.uncancel()
                raise Interrupted(self._stop_signal) from None
            raise
        self._opening = None
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

    # -- the engine's parts (a distributed engine overrides these) -------------------------

    async def _open_workshop(self, stack: AsyncExitStack) -> None:
        """Open what downloads, hashes and writes images: here, in this process."""
        self.hasher, self.downloader, self.sink = await WorkshopSpec.of(self.config).open(stack)

    async def _open_limiter(self, stack: AsyncExitStack) -> Limiter:
        """The one limiter every API call of the crawl goes through."""
        return RateLimiter(self.config.qps)

    async def _obtain(self, candidate: Candidate) -> Outcome | Obtained:
        """Download and hash one candidate: its failure outcome, or what it is.

        Raises :class:`BytesLost` when the work was lost on the way (a remote worker died):
        the candidate is simply obtained again."""
        fetched = await self.downloader.fetch(candidate)
        if isinstance(fetched, DownloadFailure):
            return failed(candidate, fetched, fetched.attempts)
        self.events.emit(Downloaded(candidate.url, len(fetched.body)))
        hashed = await self.hasher.hash(fetched.body)
        now = time.time()
        if isinstance(hashed, HashFailure):
            return failed(candidate, hashed, fetched.attempts, len(fetched.body))
        body = fetched.body if hashed.body is None else hashed.body  # (--convert-to)
        return Obtained(hashed, fetched.attempts, now, body=body)

    async def _place(self, candidate: Candidate, obtained: Obtained) -> Placed:
        """Put a decided winner in place (its file or shard member); raises OSError or
        ValueError when the write fails, :class:`BytesLost` when its bytes are gone."""
        assert obtained.body is not None
        return await self.sink.put(candidate, obtained.hashed, obtained.body, obtained.fetched_at)

    def _release(self, obtained: Obtained) -> None:
        """Forget the bytes of an image that will not be stored (a duplicate, a skip)."""
        obtained.body = None

    def _slots(self) -> int:
        """Candidates handled at the same time (``--concurrency``)."""
        return self.config.download.concurrency

    def _engine_stats(self) -> dict[str, Any] | None:
        """What ``stats.json`` says of the engine beyond the local one (None: nothing)."""
        return None

    # -- control -------------------------------------------------------------------------

    def request_stop(self, signum: int) -> None:
        """Stop on a signal: first time gracefully, second time at once.

        A signal once the crawl's work is done (while it writes its manifest and closes)
        changes nothing: the run completed and reports so.
        """
        if self._stages_done:
            log.warning("signal %d: the crawl is complete; finishing its files", signum)
            return
        if self._opening is not None:
            # Start-up is under way (at millions of images, seconds): stop it now.
            self._stop_signal = signum
            log.warning("signal %d: stopping during start-up", signum)
            self._startup_stop.set()
            self._opening.cancel()
            self._opening = None
            return
        if self._stop_signal is None:
            self._stop_signal = signum
            log.warning("signal %d: stopping (again to stop at once)", signum)
            self._stop_producing()
        else:
            log.warning("second signal: stopping now")
            for task in self._worker_tasks:
                task.cancel()

    def stop(self) -> None:
        """Stop gracefully from the caller's code, as a first Ctrl-C would (on the crawl's
        loop; from another thread: ``loop.call_soon_threadsafe(crawler.stop)``): no new work,
        downloads in flight get ``--grace`` seconds, everything decided is checkpointed, and
        :meth:`run` ends with :class:`~bingcrawl.errors.Interrupted` (``report.reason`` is
        ``interrupted``). The same config resumes the crawl."""
        if self._stages_done or self._stop_signal is not None:
            return
        self._stop_signal = signal.SIGINT
        log.info("stop requested: finishing the downloads in flight")
        self._stop_producing()

    def _stop_producing(self) -> None:
        """Cancel the producers, stop handing out queued work, give downloads ``grace``."""
        if self._stop_task is not None:
            return
        if self._producer_task is not None:
            self._producer_task.cancel()
        self._stop_task = asyncio.get_running_loop().create_task(self._graceful_stop())
        self._stop_task.add_done_callback(_log_failure)

    @property
    def stopping(self) -> bool:
        """True once a signal or a storage fault asked the crawl to stop early."""
        return self._stop_signal is not None or self._storage_error is not None

    async def _graceful_stop(self) -> None:
        await self.frontier.close(drain=False)
        if self._worker_tasks:
            _, pending = await asyncio.wait(self._worker_tasks, timeout=self.config.grace)
            for task in pending:
                task.cancel()

    def _check_free_space(self) -> None:
        """Raise ENOSPC when OUT's filesystem has less free space than ``--min-free``: the
        write that would eat into the floor is not made, and the crawl stops as on a full
        disk, with room left for the checkpoint and the manifest to be written."""
        if self._min_free:
            free = shutil.disk_usage(self.out).free
            if free < self._min_free:
                raise OSError(
                    errno.ENOSPC,
                    f"{_size(free)} free, below --min-free {_size(self._min_free)}",
                )

    def _storage_fault(self, exc: OSError) -> None:
        """A write failed for a reason that is not the image's: stop the crawl cleanly."""
        if self._storage_error is None:
            code = exc.errno or errno.EIO
            advice = _STORAGE_ADVICE.get(code, "fix the filesystem")
            reason = exc.strerror or str(exc)
            self._storage_error = StorageError(
                code,
                f"cannot write under {self.out} ({reason}): the crawl stopped and the images "
                f"not yet written stay pending; {advice}, then re-run the same command",
            )
            log.warning("a write under %s failed (%s): stopping the crawl", self.out, reason)
            if not self._stages_done:
                self._stop_producing()

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> CrawlReport:
        """Crawl until every source is done, the quota ends, or a stop is requested."""
        if self._state != "open":
            raise RuntimeError("use `async with Crawler(config) as crawler:` before run()")
        bind(run_id=self.run_id)
        reporter = asyncio.create_task(
            ProgressReporter(
                self.counters, live=self.config.progress, waiting=self.waiting_for
            ).run()
        )
        lister = asyncio.create_task(self._list_stored())
        error: BaseException | None = None
        try:
            if self._stop_signal is None:  # (a signal while the crawler opened: stop now)
                await self._run_stages()
            # Done only if nothing stopped it: after an interruption a further signal still
            # means "stop at once", not "the crawl is complete".
            self._stages_done = not self.stopping
        except BaseExceptionGroup as group:
            # Report the error that matters (e.g. AuthenticationError), not the group that
            # the task groups wrapped it in.
            error = most_significant(group)
            if error is group:
                raise
            fault = storage_fault_of(error)
            if fault is not None:
                # The disk filled under the checkpoint itself (a page or call count could
                # not commit): the same clean, resumable storage stop as a refused image.
                self._storage_fault(fault)
                error = None
        finally:
            for task in (reporter, lister):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            stats = await asyncio.shield(self._finish())
            self._finished = True
        if error is not None:
            raise error
        stop: BingCrawlError | None = None
        if self._storage_error is not None:
            stop = self._storage_error
        elif self._stop_signal is not None:
            stop = Interrupted(self._stop_signal)
        elif self._producer_error is not None:
            stop = self._producer_error
        #: The report of the last run, also when it stopped early (see CrawlReport.reason).
        self.report = CrawlReport(
            stats=stats,
            quota_exhausted=self._quota_error is not None,
            reason=_reason(stop),
            error=stop,
        )
        if stop is not None:
            raise stop
        return self.report

    async def _run_stages(self) -> None:
        producers = self._producers
        if producers is None:
            producers = [run_sources]
        async with asyncio.TaskGroup() as workers:
            self._worker_tasks = [
                workers.create_task(self._worker(), name=f"worker-{i}")
                for i in range(self._slots())
            ]
            self._producer_task = asyncio.create_task(self._produce(producers))
            try:
                await self._producer_task
            except asyncio.CancelledError:
                if not self.stopping:
                    raise
            finally:
                await self.frontier.close(drain=not self.stopping)

    async def _produce(self, producers: list[Producer]) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for producer in producers:
                    tg.create_task(producer(self))
        except* _STOPS_PRODUCING as group:
            # The API side is over (quota, an unreachable API, queries left to retry):
            # queued downloads still finish, then run() raises it.
            exc = leaves(group)[0]
            assert isinstance(exc, BingCrawlError)
            self._producer_error = exc
            if isinstance(exc, QuotaExceededError):
                self._quota_error = exc
                log.warning("API quota exhausted (%s): finishing queued downloads", exc)
            else:
                log.warning("API calls stopped: finishing queued downloads")

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
            in_flight=self.in_flight,
            images_per_s=c.recent.rate(),
            queries=queries,
            last_progress=c.last_progress,
            state=self.run_state,
        )

    def waiting_for(self) -> str:
        """What the crawl is waiting for, in words (shown when nothing has moved a while)."""
        paused = self.gate.limiter.paused_for()
        n = self.in_flight
        downloads = "1 download" if n == 1 else f"{n} downloads"
        if paused > 0:
            return f"the API: throttled, every call waits {paused:.0f} s more"
        if self.stopping:
            return f"{downloads} to finish before stopping"
        if n:
            return f"{downloads} in progress"
        if len(self.frontier):
            return "download workers"
        return "the API (the next result page)"

    @property
    def run_state(self) -> str:
        """``starting``, ``running``, ``stopping`` or ``done``."""
        if self._state == "closed" or self._finished:
            return "done"
        if self.stopping:
            return "stopping"
        return "running" if self._worker_tasks else "starting"

    # -- what the sources see (bingcrawl.sources.base.SourceHost) -------------------------

    def emit(self, event: Event) -> None:
        """Report one event of the crawl (see :mod:`bingcrawl.events`)."""
        self.events.emit(event)

    async def call_api(self, endpoint: str, fn: Callable[[], Awaitable[T]]) -> T:
        """One API request through the crawl's gate (budget, ledger, QPS, retries)."""
        return await self.gate.call(endpoint, fn)

    async def enqueue(self, candidates: list[Candidate]) -> None:
        """Hand checkpointed candidates of registered queries to the workers (waits while
        the frontier is full)."""
        for candidate in candidates:
            state = self.queries[candidate.query_id]
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

    async def release_query(self, row_id: int) -> None:
        """Wait until a row's queued candidates have their outcomes, then drop its live state
        (a ``similar`` row: one per stored image, so keeping them all would be O(stored))."""
        state = self.queries.get(row_id)
        if state is None:
            return
        while state.outstanding > 0:
            await state.wait_change()
        self.queries.pop(row_id, None)

    async def settled(self) -> None:
        """Wait until every queued candidate of every query has its outcome."""
        for state in list(self.queries.values()):
            while state.outstanding > 0:
                await state.wait_change()

    async def hash_bytes(self, data: bytes) -> Hashed | HashFailure:
        """Decode and hash ``data`` in the crawl's hash pool (seed images)."""
        return await self.hasher.hash(data)

    def add_to_index(self, hashed: Hashed) -> None:
        """Enter an image into the dedup index without storing it (a seed image: its
        copies are duplicates)."""
        self.dedup.check_and_add(hashed.sha256, hashed.phash, hashed.centre)

    # -- workers -------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            await self.checkpoint.room()  # backpressure: the checkpoint writer keeps up
            if (candidate := await self.frontier.get()) is None:
                return
            while candidate is not None and not self.stopping:
                candidate = await self._handle(candidate)

    async def _handle(self, candidate: Candidate) -> Candidate | None:
        """Process one candidate; returns a parked candidate this worker should take next."""
        state = self.queries.get(candidate.query_id)
        if state is not None and not state.may_download():
            # Start a download only if it could still be stored under --limit: downloads
            # in progress count against the limit until their outcome is decided.
            if state.full() and not state.writing:
                self._record(Outcome(candidate, Status.SKIPPED))
            else:
                state.parked.append(candidate)  # taken up when one of its downloads ends
            return None
        self.in_flight += 1
        if state is not None:
            state.downloading += 1
        try:
            outcome = await self._fetch_and_store(candidate, state)
        finally:
            self.in_flight -= 1
            if state is not None:
                state.downloading -= 1
                state.notify()
        if outcome is not None:
            self._record(outcome)
        return self._unpark(state)

    def _unpark(self, state: QueryState | None) -> Candidate | None:
        """After one of ``state``'s downloads: its parked candidates are skipped (the query
        is full) or one is handed back (a download slot under the limit is free)."""
        if state is None or not state.parked:
            return None
        if state.full():
            if state.writing:
                # Full only counting writes still under way: if one fails, a parked
                # candidate is needed. The worker that ends that write decides.
                return None
            while state.parked:
                self._record(Outcome(state.parked.popleft(), Status.SKIPPED))
            return None
        if state.may_download():
            return state.parked.popleft()
        return None

    def _record(self, outcome: Outcome) -> None:
        self.checkpoint.record_outcome(outcome)
        state = self.queries.get(outcome.candidate.query_id)
        if state is not None:
            state.settle()
        self.events.emit(OutcomeRecorded(outcome))

    async def _fetch_and_store(
        self, candidate: Candidate, state: QueryState | None
    ) -> Outcome | None:
        """Download, hash, decide; ``None`` when the outcome was recorded by the write unit
        (or the candidate stays pending after a storage fault)."""
        lost = 0
        while True:
            try:
                got = await self._obtain(candidate)
            except BytesLost as exc:
                lost += 1
                if lost > MAX_LOSSES:
                    return _lost(candidate, exc, lost)
                if self.stopping:
                    return None  # stays pending: the next run fetches it
                log.warning("%s; fetching %s again", exc, candidate.url)
                continue
            if isinstance(got, Outcome):
                return got
            outcome = await self._decide(candidate, state, got)
            if not isinstance(outcome, _Refetch):
                return outcome
            lost += 1
            if lost > MAX_LOSSES:
                return _lost(candidate, BytesLost("its bytes were lost before the write"), lost)
            if self.stopping:
                return None

    async def _decide(
        self, candidate: Candidate, state: QueryState | None, got: Obtained
    ) -> Outcome | _Refetch | None:
        """Decide a decoded image: skipped, a duplicate, or stored (by the write unit, then
        ``None``); :data:`_REFETCH` when its bytes were lost before they were written."""
        hashed = got.hashed
        # What every outcome of a decoded image says; each decision below replaces the status
        # (and adds where it landed, or what it duplicates).
        decoded = Outcome(
            candidate,
            Status.INFLIGHT,
            attempts=got.attempts,
            sha256=hashed.sha256,
            phash=hashed.phash,
            centre=hashed.centre,
            width=hashed.width,
            height=hashed.height,
            format=hashed.format,
            size=hashed.size,
            fetched_at=got.fetched_at,
        )
        while True:
            # The limit check, the dedup decision and the reservation happen with no await
            # between them, so concurrent workers can neither exceed --limit nor both store
            # copies of one picture.
            if self._storage_error is not None:
                self._release(got)
                return None  # the disk refused a write: the candidate stays pending
            if state is not None and state.full():
                self._release(got)
                return replace(decoded, status=Status.SKIPPED)
            match = self.dedup.check_and_add(hashed.sha256, hashed.phash, hashed.centre)
            if match is None:
                break
            winner = self._writing.get(match.sha256)
            # A duplicate is committed only once the image it names is stored: if that
            # write fails, this copy is decided again (and may be the one stored).
            if winner is None or await asyncio.shield(winner):
                self._release(got)
                return replace(
                    decoded,
                    status=Status.DUPLICATE,
                    duplicate_of=match.sha256,
                    distance=match.distance,
                    match=match.kind,
                )
        if state is not None:
            state.stored += 1
            state.writing += 1
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._writing[hashed.sha256] = done
        unit = asyncio.ensure_future(self._write_and_record(decoded, got, state, done))
        self._commits.add(unit)
        unit.add_done_callback(self._commits.discard)
        # Shielded: a worker cancelled after --grace does not abandon a file half-recorded;
        # the unit finishes (and _finish waits for it) so every file has its row.
        if await asyncio.shield(unit):
            return None
        return _REFETCH

    async def _write_and_record(
        self,
        decoded: Outcome,
        got: Obtained,
        state: QueryState | None,
        done: asyncio.Future[bool],
    ) -> bool:
        """Write the winner's file and record its outcome, as one unit. False when the
        image's bytes were lost before the write (nothing recorded: fetch it again)."""
        hashed = got.hashed
        stored = False
        try:
            try:
                self._check_free_space()
                placed = await self._place(decoded.candidate, got)
            except BytesLost as exc:
                log.warning("%s; fetching %s again", exc, decoded.candidate.url)
                return False
            except OSError as exc:
                if (fault := storage_fault_of(exc)) is not None:
                    self._storage_fault(fault)  # stays pending: nothing is recorded
                    return True
                self._record(_write_failed(decoded, exc))
                return True
            except ValueError as exc:
                self._record(_write_failed(decoded, exc))
                return True
            self.events.emit(FileWritten(hashed.sha256))
            self._record(
                replace(
                    decoded,
                    status=Status.STORED,
                    path=placed.path,
                    shard_offset=placed.shard_offset,
                    shard_end=placed.shard_end,
                )
            )
            stored = True
            return True
        finally:
            if state is not None:
                state.writing -= 1
            if not stored:
                self.dedup.discard(hashed.sha256)
                if state is not None:
                    state.stored -= 1
                    state.notify()
            self._writing.pop(hashed.sha256, None)
            done.set_result(stored)  # after the record: a duplicate's row follows the winner's

    async def _list_stored(self) -> None:
        """Append the images stored meanwhile to ``manifest.jsonl`` every
        :data:`MANIFEST_EVERY` seconds: the manifest follows the crawl, and a stop has only
        the last seconds' rows left to list."""
        while True:
            await asyncio.sleep(MANIFEST_EVERY)
            try:
                await self.checkpoint.append_manifest()
            except CheckpointError as exc:
                fault = storage_fault_of(exc)
                if fault is None:
                    # Said once; the end of the run tries again and reports what it meets.
                    log.error("manifest.jsonl: the append failed: %s", exc)
                else:
                    self._storage_fault(fault)
                return

    # -- end of run ----------------------------------------------------------------------

    async def _finish(self) -> dict[str, Any]:
        if self._commits:
            # Writes under way finish and record their outcome: no file without its row.
            # Bounded: a write hung on a dead network filesystem must not hang the exit
            # (its file, if it ever lands, is an orphan the next start-up removes).
            finished, hung = await asyncio.wait(set(self._commits), timeout=COMMIT_WAIT)
            if hung:
                log.error("%d image writes did not finish in %.0f s", len(hung), COMMIT_WAIT)
            for unit in finished:  # (a unit whose worker was cancelled: nobody else looks)
                if not unit.cancelled() and (exc := unit.exception()) is not None:
                    log.error("an image write failed", exc_info=exc)
        try:
            await self.checkpoint.flush()
        except CheckpointError as exc:
            fault = storage_fault_of(exc)
            if fault is None:
                raise
            self._storage_fault(fault)  # outcomes lost here are pending again next run
        snapshot = self.counters.snapshot()
        snapshot["api_calls"] = self.gate.calls - self.calls_before
        snapshot["api_throttled"] = self.gate.throttled
        downloader = getattr(self, "downloader", None)  # (not there if opening failed)
        if downloader is not None:
            # Hosts that stopped answering, given up for a while (--host-failures).
            snapshot["hosts_given_up"] = len(downloader.breaker.given_up)
        if (engine := self._engine_stats()) is not None:
            snapshot["engine"] = engine
        snapshot["stopped_by_signal"] = self._stop_signal
        snapshot["quota_exhausted"] = self._quota_error is not None
        snapshot["storage_error"] = (
            None if self._storage_error is None else str(self._storage_error)
        )
        durable = self.config.durable
        try:
            await self.checkpoint.append_manifest()  # the rows stored since the last append
            return await asyncio.to_thread(
                write_stats, self.checkpoint, self.out, durable=durable,
                extra={
                    "run": snapshot,
                    "etiquette": etiquette_record(self.config, self._ignored_ever),
                },
            )
        except (OSError, CheckpointError) as exc:
            # A full disk refuses the manifest too: the checkpoint holds everything, and the
            # next run lists what is missing. Report the storage fault, not a traceback.
            fault = storage_fault_of(exc)
            if fault is None:
                raise
            self._storage_fault(fault)
            log.error("manifest.jsonl or stats.json was not brought up to date: %s", exc)
            return {"run": snapshot}


#: Rows between two looks at a stop request while start-up reads the stored hashes.
_STOP_CHECK_EVERY = 65_536


def _until(rows: Iterator[T], stop: threading.Event) -> Iterator[T]:
    """``rows``, ending with :class:`StartupStopped` once ``stop`` is set (checked every
    :data:`_STOP_CHECK_EVERY` rows: a start-up at ten million images stops in well under a
    second)."""
    for n, row in enumerate(rows):
        if n % _STOP_CHECK_EVERY == 0 and stop.is_set():
            raise StartupStopped("a stop was asked for while the dedup index was rebuilt")
        yield row


#: Seconds between two appends to ``manifest.jsonl`` during a crawl.
MANIFEST_EVERY = 2.0

#: Seconds the end of a run waits for image writes under way.
COMMIT_WAIT = 60.0

# SQLite result codes of a full disk and of an I/O error (extended codes keep these low bits).
_SQLITE_FULL = 13
_SQLITE_IOERR = 10


def storage_fault_of(exc: BaseException | None) -> OSError | None:
    """The storage fault behind ``exc`` (an OSError with a :data:`STORAGE_FAULTS` errno),
    looking through its causes: an image write's OSError, or SQLite's "database or disk is
    full" / disk I/O error wrapped in a CheckpointError. None when it is something else."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        ours = isinstance(exc, UnsafePathError | ApiConnectionError)
        if isinstance(exc, OSError) and not ours and exc.errno in STORAGE_FAULTS:
            return exc
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            if isinstance(code, int) and code & 0xFF == _SQLITE_FULL:
                return OSError(errno.ENOSPC, "No space left on device (the checkpoint)")
            if isinstance(code, int) and code & 0xFF == _SQLITE_IOERR:
                return OSError(errno.EIO, "Input/output error (the checkpoint)")
        if isinstance(exc, CheckpointError) and "database or disk is full" in str(exc):
            return OSError(errno.ENOSPC, "No space left on device (the checkpoint)")
        exc = exc.__cause__ or exc.__context__
    return None


#: Times one candidate's work may be lost (its worker died) before it is recorded as failed
#: (``worker_lost``): an image that kills every worker that touches it must not kill them all.
MAX_LOSSES = 3


class BytesLost(Exception):
    """An image's download or bytes were lost on the way (the remote worker holding them
    died): the crawler obtains it again, up to :data:`MAX_LOSSES` times."""


@dataclass(slots=True)
class Obtained:
    """A downloaded, decoded image awaiting its decision.

    ``body`` is the bytes to store (the converted ones under ``--convert-to``) where this
    process holds them; ``holder`` is how a remote engine finds them on the worker that does.
    """

    hashed: Hashed
    attempts: int
    fetched_at: float
    body: bytes | None = None
    holder: Any = None


class _Refetch:
    """The marker :meth:`Crawler._decide` returns when the image must be fetched again."""


_REFETCH = _Refetch()


def failed(
    candidate: Candidate,
    failure: DownloadFailure | HashFailure,
    attempts: int,
    size: int | None = None,
) -> Outcome:
    """The outcome of a download or a decode that failed (``size``: bytes downloaded)."""
    return Outcome(
        candidate,
        Status.FAILED,
        attempts=attempts,
        error_class=failure.error_class,
        detail=failure.detail,
        size=size,
        fetched_at=time.time(),
    )


def _lost(candidate: Candidate, exc: Exception, times: int) -> Outcome:
    return Outcome(
        candidate,
        Status.FAILED,
        attempts=times,
        error_class=ErrorClass.WORKER_LOST,
        detail=f"lost {times} times: {exc}"[:200],
        fetched_at=time.time(),
    )


def _write_failed(decoded: Outcome, exc: Exception) -> Outcome:
    return replace(decoded, status=Status.FAILED, error_class="write_error", detail=str(exc)[:200])


def _outcomes_to(callback: Callable[[Outcome], object]) -> Callable[[Event], None]:
    """An event subscriber that hands each recorded outcome to ``callback``."""

    def on_event(event: Event) -> None:
        if isinstance(event, OutcomeRecorded):
            callback(event.outcome)

    return on_event


def _log_failure(task: asyncio.Task[None]) -> None:
    """Done-callback of background tasks: their errors are logged, never lost."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s failed", task.get_name(), exc_info=exc)


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
