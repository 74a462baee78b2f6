"""The Ray engine (``--engine ray``): the same crawl, its downloads spread over a cluster.

What runs where, and why:

* **The driver** (the ``bingcrawl crawl`` process) keeps everything that must be one: the
  sources and their API calls, the SQLite checkpoint (one writer, same schema), the dedup
  index and the per-query ``--limit`` bookkeeping. A decision (``--limit``, exact and near
  dedup, the reservation of the winner) is a few microseconds of Python with no await in it,
  as in the local engine, so two workers hashing copies of one picture at the same moment
  cannot both store it: the second copy reaches the same index. Measured with
  ``python -m benchmarks.ray_bench`` on the 2-core build machine: the index decides ~23,000
  images/s holding 1M stored images, while the whole driver (API paging, checkpoint, dispatch)
  costs ~0.56 ms of CPU per image, i.e. ~1,800 images/s per driver core: the index is more
  than ten times faster than the driver around it, so an index actor (a network round trip
  in every decision) or a sharded one would add latency and failure modes for no capacity.
* **Workers** (:class:`~bingcrawl.cluster.worker.FetchWorker` actors, spread over the nodes)
  download and hash, keep the bytes, and write the winners into the shared output directory
  (their own shard series under ``--output-format webdataset``). Work goes out and results
  come back in batches (see the worker module).
* **The API limiter** is one actor per search key (:class:`~bingcrawl.cluster.worker.
  LimiterActor`, named after a digest of endpoint and key): every API call of the crawl is
  granted by it, and so are those of any other crawl on the cluster with the same key.

Faults: a worker that dies takes its in-flight candidates and the bytes it held with it; the
driver fetches them again on another worker (Ray restarts the dead one where it can), so
nothing is lost and nothing is stored twice (a winner's row is written only once its worker
says the bytes are in place). The driver killed (``kill -9``) is a crash like any other:
the checkpoint is the truth, and the same command resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import math
import os
import signal
import socket
import threading
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bingcrawl.cluster.worker import Command, FetchWorker, LimiterActor, WorkerSpec
from bingcrawl.engine.crawler import BytesLost, Crawler, Obtained, WorkshopSpec, failed
from bingcrawl.engine.frontier import Frontier
from bingcrawl.engine.ratelimit import Limiter
from bingcrawl.errors import CheckpointError, ConfigError, IncompleteCrawlError
from bingcrawl.events import Downloaded
from bingcrawl.records import Candidate, DownloadFailure, Outcome
from bingcrawl.store.sinks import Placed, image_path

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["ClusterError", "RayCrawler", "RemoteLimiter", "WorkerPool", "import_ray"]

log = logging.getLogger(__name__)

#: Ray namespace of bingcrawl's actors (the limiter is found by name in it).
NAMESPACE = "bingcrawl"
#: Seconds commands wait to be sent together to a worker.
FLUSH_DELAY = 0.002
#: Seconds the workers get to start (an actor that cannot be placed fails the run).
START_TIMEOUT = 180.0
#: Times a dead worker is asked whether Ray restarted it, and the pause between.
REVIVE_ATTEMPTS = 5
REVIVE_PAUSE = 1.0
#: Seconds the cluster's head gets to accept a connection before joining it is given up.
HEAD_TIMEOUT = 10.0


class ClusterError(IncompleteCrawlError):
    """The cluster cannot run the crawl (no worker left, none could start). Resumable:
    everything decided is checkpointed; re-run once the cluster is healthy."""


def import_ray() -> ModuleType:
    """Ray, or a ConfigError naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--engine",
            "ray needs Ray, which is not installed: pip install 'bingcrawl[ray]' "
            "(or use --engine local)",
        ) from None
    return ray


class RemoteLimiter:
    """The driver's handle of the cluster's :class:`LimiterActor` (a :class:`Limiter`).

    ``connect()`` returns the actor's handle (creating it if needed); if the actor dies (its
    node was lost), the next grant connects again and re-sends the pause this driver knows.
    """

    def __init__(self, ray: ModuleType, connect: Callable[[], Any], qps: float) -> None:
        self.qps = qps
        self._ray = ray
        self._connect = connect
        self._handle = connect()
        self._pause_until = -math.inf
        self._pauses: list[Any] = []  # pause calls not yet known to have reached the actor

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    async def start(self) -> None:
        await self._handle.set_qps.remote(self.qps)

    async def acquire(self) -> None:
        for attempt in range(3):
            try:
                # A pause sent before this grant must reach the actor first (calls of an
                # async actor may start out of order).
                while self._pauses:
                    await self._pauses.pop(0)
                left = await self._handle.acquire.remote()
            except self._ray.exceptions.RayActorError:
                if attempt == 2:
                    raise
                log.warning("the API limiter actor was lost: connecting to it again")
                self._pauses.clear()
                self._handle = self._connect()
                await self._handle.set_qps.remote(self.qps)
                if (left := self.paused_for()) > 0:
                    self._pauses.append(self._handle.pause.remote(left))
                continue
            self._note(left)
            return

    def _note(self, left: float) -> None:
        if left > 0:
            self._pause_until = max(self._pause_until, self._now() + left)

    def paused_for(self) -> float:
        return max(0.0, self._pause_until - self._now())

    def pause(self, seconds: float) -> None:
        self._note(seconds)
        self._pauses.append(self._handle.pause.remote(seconds))


class _Channel:
    """The driver's end of one worker: its commands under way and its batches."""

    def __init__(self, index: int, handle: Any) -> None:
        self.index = index
        self.handle = handle
        self.pending: dict[int, asyncio.Future[tuple[str, Any]]] = {}
        self.outbox: list[Command] = []
        self.flush: asyncio.TimerHandle | None = None
        self.life = 0  # bumped at every loss: a holder of an earlier life is stale
        self.up = False
        self.dead = False
        self.pid = 0
        self.poller: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"worker {self.index} (pid {self.pid})"


#: Where a decoded image's bytes are: its worker's channel, that worker's life, the token.
Holder = tuple[_Channel, int, int]


class WorkerPool:
    """The driver's side of the cluster's workers: dispatch, batching, loss and revival."""

    def __init__(self, ray: ModuleType, specs: list[WorkerSpec], *, cpus: float) -> None:
        self._ray = ray
        self._specs = specs
        self._cpus = cpus
        self._rids = itertools.count(1)
        self._channels: list[_Channel] = []
        self._changed = asyncio.Event()
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Workers lost during the run (each a re-dispatch of its in-flight candidates).
        self.losses = 0

    @property
    def size(self) -> int:
        return len(self._specs)

    def closing(self) -> bool:
        """True once :meth:`close` began (a worker's end is then no loss)."""
        return self._closing

    async def start(self) -> None:
        ray = self._ray
        actor = ray.remote(FetchWorker).options(
            num_cpus=self._cpus,
            max_restarts=8,
            max_task_retries=0,
            max_concurrency=100_000,
            scheduling_strategy="SPREAD",
        )
        for spec in self._specs:
            self._channels.append(_Channel(spec.index, actor.remote(spec)))
        try:
            async with asyncio.timeout(START_TIMEOUT):
                answers = await asyncio.gather(*(c.handle.ping.remote() for c in self._channels))
        except TimeoutError:
            raise ClusterError(
                f"{self.size} workers could not start within {START_TIMEOUT:.0f} s: the "
                "cluster lacks the CPUs (ray status), or its nodes cannot import bingcrawl"
            ) from None
        except ray.exceptions.RayError as exc:
            # e.g. the output directory is not mounted (or not writable) on a worker's node
            raise ClusterError(f"the download workers could not start: {exc}") from exc
        for chan, pid in zip(self._channels, answers, strict=True):
            chan.pid, chan.up = pid, True
            chan.poller = asyncio.create_task(self._poll(chan), name=f"poll-{chan.index}")
        log.info(
            "%d download worker%s up (pids %s)",
            self.size, "" if self.size == 1 else "s", [c.pid for c in self._channels],
        )  # fmt: skip

    async def close(self) -> None:
        """Let the workers finish their writes, then end them."""
        self._closing = True
        live = [c for c in self._channels if c.up]
        for chan in live:
            self._flush(chan)
        stops = [c.handle.stop.remote() for c in live]
        if stops:
            try:
                async with asyncio.timeout(70):
                    await asyncio.gather(*stops, return_exceptions=True)
            except TimeoutError:
                log.warning("workers did not stop in time; ending them")
        for chan in self._channels:
            if chan.poller is not None:
                chan.poller.cancel()
            if chan.flush is not None:
                chan.flush.cancel()
            self._ray.kill(chan.handle, no_restart=True)
        for task in list(self._tasks):
            task.cancel()

    async def _pick(self) -> _Channel:
        while True:
            up = [c for c in self._channels if c.up]
            if up:
                return min(up, key=lambda c: len(c.pending))
            if all(c.dead for c in self._channels):
                raise ClusterError(
                    "every download worker died and Ray could not restart them: re-run "
                    "the same command once the cluster is healthy (nothing is lost)"
                )
            self._changed.clear()
            await self._changed.wait()

    def _send(self, chan: _Channel, command: Command) -> asyncio.Future[tuple[str, Any]]:
        future: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        chan.pending[command[1]] = future
        self._queue(chan, command)
        return future

    def _queue(self, chan: _Channel, command: Command) -> None:
        chan.outbox.append(command)
        if chan.flush is None:
            chan.flush = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._flush, chan)

    def _flush(self, chan: _Channel) -> None:
        if chan.flush is not None:
            chan.flush.cancel()
            chan.flush = None
        if not chan.outbox:
            return
        batch, chan.outbox = chan.outbox, []
        self._spawn(self._submit(chan, chan.life, batch))

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _submit(self, chan: _Channel, life: int, batch: list[Command]) -> None:
        try:
            await chan.handle.submit.remote(batch)
        except Exception as exc:
            # The worker died (its poll notices too) or a batch could not be sent: the
            # commands of this batch are lost either way.
            if chan.life == life:
                for command in batch:
                    if command[0] != "drop":
                        future = chan.pending.pop(command[1], None)
                        if future is not None and not future.done():
                            future.set_exception(BytesLost(f"{chan.name} failed: {exc}"))

    async def _poll(self, chan: _Channel) -> None:
        while not self.closing():
            try:
                results = await chan.handle.poll.remote(1.0)
            except self._ray.exceptions.RayError as exc:
                if self.closing():
                    return
                await self._lost(chan, exc)
                if chan.dead:
                    return
                continue
            for result in results:
                try:
                    rid, kind, payload = result
                    future = chan.pending.pop(rid, None)
                    if future is None or future.done():
                        if kind == "hashed":  # nobody waits for these bytes any more
                            self._queue(chan, ("drop", payload[0]))
                        continue
                    future.set_result((kind, payload))
                except Exception:  # a malformed result must not stop every later one
                    log.exception("%s sent a result the driver cannot read", chan.name)

    async def _lost(self, chan: _Channel, exc: BaseException) -> None:
        """A worker died: its commands are lost (they are done again elsewhere); wait for
        Ray to restart it, or give it up."""
        chan.up = False
        chan.life += 1
        self.losses += 1
        lost = BytesLost(f"{chan.name} died ({type(exc).__name__})")
        pending, chan.pending = chan.pending, {}
        chan.outbox.clear()
        for future in pending.values():
            if not future.done():
                future.set_exception(lost)
        log.warning("%s died: its %d candidates in flight go to other workers", chan.name,
                    len(pending))  # fmt: skip
        self._changed.set()
        for _ in range(REVIVE_ATTEMPTS):
            try:
                async with asyncio.timeout(60):
                    chan.pid = await chan.handle.ping.remote()
            except (self._ray.exceptions.RayError, TimeoutError):
                await asyncio.sleep(REVIVE_PAUSE)  # Ray's restart is under way, or it is dead
                continue
            chan.up = True
            log.warning("%s is back", chan.name)
            self._changed.set()
            return
        chan.dead = True
        log.error("%s could not be restarted", chan.name)
        self._changed.set()

    async def fetch(self, candidate: Candidate) -> tuple[str, Any, Holder | None]:
        """Download and hash ``candidate`` on a worker: ``(kind, payload, holder)``."""
        chan = await self._pick()
        life = chan.life
        kind, payload = await self._send(chan, ("fetch", next(self._rids), candidate))
        if kind == "hashed":
            return kind, payload, (chan, life, payload[0])
        return kind, payload, None

    async def put(self, holder: Holder, candidate: Candidate, obtained: Obtained) -> Placed:
        """Write a winner on the worker holding its bytes."""
        chan, life, token = holder
        if chan.life != life or not chan.up:
            raise BytesLost(f"{chan.name} restarted since it downloaded the image")
        command = ("put", next(self._rids), token, candidate, obtained.hashed, obtained.fetched_at)
        kind, payload = await self._send(chan, command)
        if kind == "placed":
            assert isinstance(payload, Placed)
            return payload
        if kind == "oserror":
            code, message = payload
            raise OSError(code, message)
        if kind == "valueerror":
            raise ValueError(payload)
        if kind == "lost":
            raise BytesLost(f"{chan.name} no longer holds the image")
        raise RuntimeError(f"{chan.name}: {payload}")

    def drop(self, holder: Holder) -> None:
        """Forget an image's bytes (it is not stored)."""
        chan, life, token = holder
        if chan.life == life and chan.up:
            self._queue(chan, ("drop", token))

    def pids(self) -> list[int]:
        """Process ids of the workers (tests kill one)."""
        return [c.pid for c in self._channels if c.up]


class _Runtime:
    """This process's connection to Ray, shared by the crawls it runs at the same time: the
    last one to close disconnects (if a crawl connected; a caller's own ``ray.init`` stays).
    ``ours``: the runtime was started here (not a cluster that was joined)."""

    def __init__(self) -> None:
        self.users = 0
        self.joined = False
        self.ours = False
        self._lock: asyncio.Lock | None = None

    @property
    def lock(self) -> asyncio.Lock:
        """Held while connecting (two crawls starting together connect once)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def release(self, ray: ModuleType) -> None:
        self.users -= 1
        if self.users == 0:
            self._lock = None  # (the next crawl may run on another event loop)
        if self.users == 0 and self.joined:
            self.joined = self.ours = False
            ray.shutdown()


_RUNTIME = _Runtime()


def _connect(ray: ModuleType, address: str | None, options: dict[str, Any]) -> None:
    """``ray.init``, after checking that the cluster's head answers at all (Ray itself
    retries an unreachable address for minutes, deaf to signals, before giving up)."""
    where = address or os.environ.get("RAY_ADDRESS")

    def fail(reason: object) -> ClusterError:
        return ClusterError(
            f"cannot join the Ray cluster at {where}: {reason} (start it with `ray start "
            "--head`, give its head's HOST:PORT to --ray-address, or leave --ray-address "
            "out to start Ray on this machine)"
        )

    if where is not None and not where.startswith("ray://"):
        canonicalize: Callable[[str], str | None] | None
        try:
            from ray._private.services import canonicalize_bootstrap_address as canonicalize
        except ImportError:  # (a Ray without it: ray.init says what is wrong, later)
            canonicalize = None
        if canonicalize is not None:
            try:
                head = canonicalize(where)
            except ConnectionError as exc:
                raise fail(exc) from None
            except ValueError as exc:
                raise ConfigError("--ray-address", f"{where!r}: {exc}") from None
            if head is not None:
                host, _, port = head.rpartition(":")
                try:
                    socket.create_connection((host, int(port)), timeout=HEAD_TIMEOUT).close()
                except (OSError, ValueError) as exc:
                    raise fail(f"{head} does not answer ({exc})") from None
    try:
        ray.init(
            address=address,
            namespace=NAMESPACE,
            logging_level=logging.WARNING,
            log_to_driver=True,
            **options,
        )
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        raise fail(exc) from exc


def _reclaim_signals() -> None:
    """Give SIGTERM and SIGINT back to Python's handlers: Ray's core worker installs a C
    crash handler for them at connect time that prints a stack dump before calling ours."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(signum)
        if handler is not None:
            signal.signal(signum, handler)


class _NotMainThreadNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def default_workers(ray: ModuleType) -> int:
    """One worker per pair of the cluster's CPUs (at least one)."""
    cpus = float(ray.cluster_resources().get("CPU", 1))
    return max(1, int(cpus // 2))


class RayCrawler(Crawler):
    """A :class:`~bingcrawl.engine.crawler.Crawler` whose downloads, hashing and writes run
    on Ray workers (see the module docstring); everything else is the local engine's."""

    pool: WorkerPool
    _maybe_orphans: list[str]

    async def _open_workshop(self, stack: AsyncExitStack) -> None:
        config = self.config
        ray = import_ray()
        self._maybe_orphans = []
        workshop = replace(WorkshopSpec.of(config), out=self.out.resolve())
        # The driver hashes only seed images: a thread is plenty.
        self.hasher = await stack.enter_async_context(workshop.hash_pool(0))
        async with _RUNTIME.lock:
            if not ray.is_initialized():
                log.info("connecting to Ray at %s", config.ray_address or "a new local runtime")
                # SIGTERM is the crawl's (drain, checkpoint, exit 143), not Ray's handler, which
                # exits at once: ray.init in a thread does not install it (and says so: quiet
                # that); its C++ crash handler is undone after connecting (_reclaim_signals).
                logging.getLogger("ray._private.worker").addFilter(_NotMainThreadNotice())
                options: dict[str, Any] = {}
                if config.ray_address is None:  # a runtime of our own on this machine
                    options = {"include_dashboard": False, "object_store_memory": 128 * 2**20}
                await asyncio.to_thread(_connect, ray, config.ray_address, options)
                _RUNTIME.ours = config.ray_address is None and not os.environ.get("RAY_ADDRESS")
                _RUNTIME.joined = True
                _reclaim_signals()
        _RUNTIME.users += 1
        stack.callback(_RUNTIME.release, ray)
        n = config.workers or default_workers(ray)
        cpus = float(ray.cluster_resources().get("CPU", 1))
        level = logging.getLogger("bingcrawl").getEffectiveLevel()
        hash_workers = 1 if config.hash_workers is None else config.hash_workers
        specs = [
            WorkerSpec(
                replace(workshop, hash_workers=hash_workers, series=f"w{i}"),
                index=i,
                log_level=level,
            )
            for i in range(n)
        ]
        pool = WorkerPool(ray, specs, cpus=min(1.0, math.floor(cpus / n * 100) / 100))
        stack.push_async_callback(pool.close)
        await pool.start()
        self.pool = pool
        # Downloads in flight: --concurrency per worker; the frontier keeps them fed.
        self.frontier = Frontier(max(self.config.queue_size, 2 * self._slots()))

    async def _open_limiter(self, stack: AsyncExitStack) -> Limiter:
        ray = import_ray()
        config = self.config
        digest = hashlib.sha256(f"{config.endpoint}\0{config.key or ''}".encode()).hexdigest()
        options: dict[str, Any] = {
            "name": f"limiter-{digest[:16]}",
            "namespace": NAMESPACE,
            "get_if_exists": True,
            "num_cpus": 0,
            "max_concurrency": 100_000,
        }
        if not _RUNTIME.ours:
            # On a cluster the crawl joined, the limiter outlives this crawl: another one
            # with the same key may be using it.
            options["lifetime"] = "detached"

        def connect() -> Any:
            return ray.remote(LimiterActor).options(**options).remote(config.qps)

        limiter = RemoteLimiter(ray, connect, config.qps)
        await limiter.start()
        return limiter

    def _slots(self) -> int:
        return self.config.download.concurrency * self.pool.size

    async def _obtain(self, candidate: Candidate) -> Outcome | Obtained:
        kind, payload, holder = await self.pool.fetch(candidate)
        if kind == "hashed":
            _, hashed, attempts, size, fetched_at = payload
            self.events.emit(Downloaded(candidate.url, size))
            return Obtained(hashed, attempts, fetched_at, holder=holder)
        if kind == "failed":
            if isinstance(payload, DownloadFailure):
                return failed(candidate, payload, payload.attempts)
            failure, attempts, size = payload
            self.events.emit(Downloaded(candidate.url, size))
            return failed(candidate, failure, attempts, size)
        raise RuntimeError(f"a worker failed on {candidate.url}: {payload}")

    async def _place(self, candidate: Candidate, obtained: Obtained) -> Placed:
        try:
            return await self.pool.put(obtained.holder, candidate, obtained)
        except BytesLost:
            if self.config.output_format == "files":
                # Its worker died during the write: the file may have landed without its row.
                self._maybe_orphans.append(image_path(candidate, obtained.hashed))
            raise

    async def _finish(self) -> dict[str, Any]:
        stats = await super()._finish()
        if self._maybe_orphans:
            await self._remove_orphans()
        return stats

    async def _remove_orphans(self) -> None:
        """Files a dying worker may have written without their row (content-addressed: a
        re-fetched copy that was stored has its row at the same path and stays)."""
        try:
            kept = await self.checkpoint.stored_paths(self._maybe_orphans)
        except CheckpointError:
            return  # (the next start-up's recovery removes them)
        for rel in self._maybe_orphans:
            if rel not in kept:
                with contextlib.suppress(FileNotFoundError):
                    (self.out / rel).unlink()
                    log.info("removed %s, written by a worker that died", rel)
        self._maybe_orphans.clear()

    def _release(self, obtained: Obtained) -> None:
        if obtained.holder is not None:
            self.pool.drop(obtained.holder)
            obtained.holder = None

    def _engine_stats(self) -> dict[str, Any] | None:
        return {
            "name": "ray",
            "workers": self.pool.size,
            "workers_lost": self.pool.losses,
        }
