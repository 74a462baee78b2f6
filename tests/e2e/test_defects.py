"""Regressions of issue 13 in the crawler core: lost images, stalls, a crash-safe stop.

The crawls here run against a real loopback image host (an aiohttp test server) and the real
checkpoint, with candidates handed to the crawler by a small producer, so each test controls
exactly which URLs belong to which query. Where a test needs an operation to be in progress
(a write under way, a slow download), it holds it on an event and releases it when the
condition under test is reached: nothing waits on the clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import io
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from bingcrawl.bing.client import DEFAULT_ENDPOINT
from bingcrawl.emulator import EmulatorConfig
from bingcrawl.engine.crawler import MAX_LOSSES, BytesLost, Crawler
from bingcrawl.errors import (
    ApiConnectionError,
    IncompleteCrawlError,
    Interrupted,
    StorageError,
)
from bingcrawl.obs.progress import ProgressReporter, summary_table
from bingcrawl.records import Candidate, Source
from bingcrawl.sources.base import SourceContext
from bingcrawl.store.sinks import FileSink
from tests.support import tmpfs
from tests.support.crawls import crawl_config, db, read_manifest, small_corpus
from tests.support.emulator import StartEmulator


def picture(name: str) -> bytes:
    """A small PNG whose pixels (and so its hashes) depend on ``name`` alone."""
    rng = random.Random(name)
    img = Image.frombytes("RGB", (32, 32), bytes(rng.randrange(256) for _ in range(32 * 32 * 3)))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Host:
    """A loopback image host: ``/img/<name>`` serves ``picture(name)``; ``/same/<n>`` serves one
    picture under many URLs; a name in ``hold`` waits for its event first."""

    base: str
    hold: dict[str, asyncio.Event]
    served: list[str]


@pytest.fixture
async def host() -> AsyncIterator[Host]:
    hold: dict[str, asyncio.Event] = {}
    served: list[str] = []

    async def image(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name in hold:
            await hold[name].wait()
        served.append(name)
        return web.Response(body=picture(name), content_type="image/png")

    async def same(request: web.Request) -> web.Response:
        served.append(request.path)
        return web.Response(body=picture("the same picture"), content_type="image/png")

    app = web.Application()
    app.router.add_get("/img/{name}", image)
    app.router.add_get("/same/{n}", same)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Host(f"http://127.0.0.1:{port}/", hold, served)
    finally:
        await runner.cleanup()


Plan = Sequence[tuple[str, int, Sequence[str]]]


def producer(host: Host, plan: Plan) -> Callable[[Crawler], Awaitable[None]]:
    """A producer that registers one row per (label, limit, paths) and queues its URLs."""

    async def produce(crawler: Crawler) -> None:
        cp = crawler.checkpoint
        stored = await cp.stored_counts()
        for label, limit, paths in plan:
            row = await cp.upsert_query(source="urls", label=label, text=label, norm=label)
            cands = [
                Candidate(url=host.base + p, label=label, query=label, source=Source.URLS)
                for p in paths
            ]
            await cp.add_candidates(cands, query_id=row.id)
            state = crawler.query_state(row.id, label, label, stored.get(row.id, 0))
            state.limit = limit
        pending = [c async for c in cp.iter_pending()]
        for candidate in pending:
            await crawler.enqueue([candidate])

    return produce


def config(host: Host, out: Path, **kw: Any) -> Any:
    return crawl_config(SimpleNamespace(base_url=host.base), out, [], **kw)


def rows(out: Path) -> list[sqlite3.Row]:
    return db(out, "SELECT * FROM candidates ORDER BY id")


def intercept_writes(crawler: Crawler, before: Callable[[int], None]) -> None:
    """Run ``before(n)`` (on the writer thread) ahead of the crawl's n-th image write (from
    1); it may block, or raise to make that write fail."""
    assert isinstance(crawler.sink, FileSink)
    files = crawler.sink.writer
    write = files.write
    calls = 0

    def intercepted(label: str, name: str, data: bytes) -> str:
        nonlocal calls
        calls += 1
        before(calls)
        return write(label, name, data)

    files.write = intercepted  # type: ignore[method-assign]


async def crawl(host: Host, out: Path, plan: Plan, **kw: Any) -> Crawler:
    crawler = Crawler(config(host, out, **kw), producers=[producer(host, plan)])
    async with crawler:
        await crawler.run()
    return crawler


# -- 8. head-of-line blocking ---------------------------------------------------------------


async def test_a_query_at_its_limit_does_not_hold_up_the_others(host: Host, tmp_path: Path) -> None:
    # Query "a" wants one image; its first download is slow. Its surplus candidates used to
    # park every worker (wait_change) until that download ended: query "b" froze. Here the
    # slow download is released only once "b" has all its images, so the old code deadlocks.
    host.hold["slow"] = asyncio.Event()
    b_paths = [f"img/b{i}" for i in range(6)]
    plan = [("a", 1, ["img/slow"] + [f"img/a{i}" for i in range(6)]), ("b", 6, b_paths)]
    cfg = config(host, tmp_path, concurrency=2)
    # The held download must not time out while query b runs (no clock in this test).
    patient = dataclasses.replace(cfg.download, timeout=120.0, read_timeout=120.0)
    crawler = Crawler(dataclasses.replace(cfg, download=patient), producers=[producer(host, plan)])

    async with crawler:
        record = crawler._record

        def watch(outcome: Any) -> None:
            record(outcome)
            b = [s for s in crawler.queries.values() if s.label == "b"]
            if b and b[0].stored >= 6:
                host.hold["slow"].set()

        crawler._record = watch  # type: ignore[method-assign]
        async with asyncio.timeout(60):  # a deadlock guard, not a synchronisation
            await crawler.run()

    by_label: dict[str, list[str]] = {}
    for row in rows(tmp_path):
        by_label.setdefault(row["label"], []).append(row["status"])
    assert sorted(by_label["b"]) == ["stored"] * 6
    assert sorted(by_label["a"]) == ["skipped"] * 6 + ["stored"]
    stored_a = [r["url"] for r in rows(tmp_path) if r["label"] == "a" and r["status"] == "stored"]
    assert stored_a == [host.base + "img/slow"]
    # the surplus of "a" was never downloaded: parked, then skipped once "a" was full
    assert not {f"a{i}" for i in range(6)} & set(host.served)


# -- 2. a duplicate never names an image that is not stored -----------------------------------


class WatchedDedup:
    """The crawl's dedup index, telling the test when a copy has been matched."""

    def __init__(self, inner: Any, matched: threading.Event) -> None:
        self._inner = inner
        self._matched = matched

    def check_and_add(self, sha256: str, phash: int, centre: int | None = None) -> Any:
        match = self._inner.check_and_add(sha256, phash, centre)
        if match is not None:
            self._matched.set()
        return match

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_a_duplicate_waits_for_its_winner_and_takes_over_when_it_fails(
    host: Host, tmp_path: Path
) -> None:
    # Two URLs serve the same bytes. The first one's write is held until the second has been
    # matched against it, then fails: the copy must be stored, not committed as a duplicate
    # of an image that does not exist.
    crawler = Crawler(
        config(host, tmp_path, concurrency=2),
        producers=[producer(host, [("x", 10, ["same/1", "same/2"])])],
    )
    matched = threading.Event()
    async with crawler:
        crawler.dedup = WatchedDedup(crawler.dedup, matched)  # type: ignore[assignment]

        def failing_first_write(n: int) -> None:
            if n == 1:
                assert matched.wait(30), "the copy was never matched against the winner"
                raise OSError(errno.EACCES, "Permission denied")

        intercept_writes(crawler, failing_first_write)
        await crawler.run()

    statuses = sorted((r["status"], r["error_class"]) for r in rows(tmp_path))
    assert statuses == [("failed", "write_error"), ("stored", None)]
    manifest = read_manifest(tmp_path)
    assert len(manifest) == 1
    assert (tmp_path / manifest[0]["path"]).is_file()


async def test_a_duplicate_is_committed_after_its_winner_is_stored(
    host: Host, tmp_path: Path
) -> None:
    crawler = await crawl(host, tmp_path, [("x", 10, [f"same/{i}" for i in range(8)])])
    assert crawler.counters.stored == 1
    got = rows(tmp_path)
    winner = [r for r in got if r["status"] == "stored"]
    assert len(winner) == 1
    copies = [r for r in got if r["status"] == "duplicate"]
    assert len(copies) == 7
    assert {r["duplicate_of"] for r in copies} == {winner[0]["sha256"]}
    # every duplicate's row was queued to the one FIFO writer after the winner's (so it
    # commits in the same transaction or a later one, never before)
    assert all(r["updated_at"] >= winner[0]["updated_at"] for r in copies)


# -- 1. storage faults stop the crawl cleanly and lose nothing --------------------------------


async def test_a_full_disk_stops_the_crawl_and_a_rerun_resumes(host: Host, tmp_path: Path) -> None:
    plan = [("x", 100, [f"img/x{i}" for i in range(40)])]
    crawler = Crawler(config(host, tmp_path, concurrency=4), producers=[producer(host, plan)])
    async with crawler:

        def disk_fills_up(n: int) -> None:
            if n > 5:
                raise OSError(errno.ENOSPC, "No space left on device")

        intercept_writes(crawler, disk_fills_up)

        def manifest_too(*args: Any, **kw: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        with pytest.MonkeyPatch.context() as patch:
            # the full disk refuses the manifest's append as well: still the storage fault
            patch.setattr("bingcrawl.store.manifest._pwrite_all", manifest_too)
            with pytest.raises(StorageError) as info:
                await crawler.run()
    assert info.value.exit_code == 5
    assert "No space left on device" in str(info.value)
    assert "re-run" in str(info.value)
    statuses = [r["status"] for r in rows(tmp_path)]
    # nothing was failed for good: the rows the disk refused are still pending
    assert statuses.count("stored") == 5
    assert "failed" not in statuses
    assert statuses.count("pending") == 35
    # the crawl stopped: it did not go on downloading everything to fail it
    assert len(host.served) < 40

    # disk space back: the same crawl resumes and completes
    await crawl(host, tmp_path, plan, concurrency=4)
    assert sorted(r["status"] for r in rows(tmp_path)) == ["stored"] * 40
    assert len(read_manifest(tmp_path)) == 40


async def test_a_thousand_labels_do_not_exhaust_file_descriptors(
    host: Host, tmp_path: Path
) -> None:
    # One open directory handle per label used to be kept forever: label ~1,018 failed with
    # "Too many open files". The cache is bounded now.
    labels = [f"class{i:04d}" for i in range(200)]
    plan = [(label, 1, [f"img/{label}"]) for label in labels]
    crawler = Crawler(config(host, tmp_path, concurrency=8), producers=[producer(host, plan)])
    images = str(tmp_path / "images")

    def open_label_dirs() -> int:
        fds = Path("/proc/self/fd")
        return sum(1 for fd in fds.iterdir() if _target(fd).startswith(images + "/"))

    async with crawler:
        assert isinstance(crawler.sink, FileSink)
        crawler.sink.writer.max_open_dirs = 16
        await crawler.run()
        assert crawler.sink.writer.open_dirs <= 16
        assert open_label_dirs() <= 16
    assert sorted(r["status"] for r in rows(tmp_path)) == ["stored"] * 200


def _target(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:  # closed meanwhile
        return ""


# -- 4. a write under way when the workers are cancelled still gets its row ------------------


async def test_a_write_cancelled_after_grace_is_recorded(host: Host, tmp_path: Path) -> None:
    crawler = Crawler(
        config(host, tmp_path, concurrency=1, grace=0.01),
        producers=[producer(host, [("x", 10, ["img/one"])])],
    )
    entered = asyncio.Event()
    release = threading.Event()
    loop = asyncio.get_running_loop()
    async with crawler:

        def slow_write(n: int) -> None:
            loop.call_soon_threadsafe(entered.set)
            assert release.wait(30)

        intercept_writes(crawler, slow_write)
        run = asyncio.create_task(crawler.run())
        await entered.wait()
        crawler.request_stop(signal.SIGTERM)
        crawler.request_stop(signal.SIGTERM)  # again: the workers are cancelled at once
        for task in crawler._worker_tasks:
            with pytest.raises(asyncio.CancelledError):
                await task
        release.set()
        with pytest.raises(Interrupted):
            await run
    (row,) = rows(tmp_path)
    assert row["status"] == "stored"
    assert (tmp_path / row["path"]).is_file()
    files = [p for p in (tmp_path / "images").rglob("*") if p.is_file()]
    assert [p.relative_to(tmp_path).as_posix() for p in files] == [row["path"]]


# -- 5. after a clean stop, checkpoint.sqlite alone holds the crawl ---------------------------


async def test_the_checkpoint_file_alone_holds_the_crawl_after_a_clean_stop(
    host: Host, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    await crawl(host, out, [("x", 100, [f"img/x{i}" for i in range(12)])])
    wal = out / "checkpoint.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    copy = tmp_path / "copy.sqlite"
    shutil.copyfile(out / "checkpoint.sqlite", copy)  # what a user copying "the truth" gets
    conn = sqlite3.connect(copy)
    try:
        (stored,) = conn.execute(
            "SELECT count(*) FROM candidates WHERE status = 'stored'"
        ).fetchone()
    finally:
        conn.close()
    assert stored == 12


# -- 11. a signal once the crawl is done does not turn it into an interruption ---------------


async def test_a_signal_while_the_finished_crawl_writes_its_files_is_ignored(
    host: Host, tmp_path: Path
) -> None:
    crawler = Crawler(
        config(host, tmp_path), producers=[producer(host, [("x", 10, ["img/a", "img/b"])])]
    )
    async with crawler:
        flush = crawler.checkpoint.flush

        async def signalled_flush() -> None:
            crawler.request_stop(signal.SIGINT)  # Ctrl-C while the manifest is written
            await flush()

        crawler.checkpoint.flush = signalled_flush  # type: ignore[method-assign]
        report = await crawler.run()
    assert report.stats["run"]["stored"] == 2
    assert report.stats["run"]["stopped_by_signal"] is None


# -- 9. an unreachable API: not a failure of the queries, a run that did not complete ---------


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_an_unreachable_api_stops_the_run_and_the_next_run_resumes(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    dead = SimpleNamespace(base_url=f"http://127.0.0.1:{closed_port()}/")
    queries = ["red panda", "lighthouse"]
    cfg = crawl_config(dead, tmp_path, queries, api_retries=1, api_backoff=0.01, limit=5)
    async with Crawler(cfg) as crawler:
        with pytest.raises(ApiConnectionError) as info:
            await crawler.run()
    assert info.value.exit_code == 6
    assert "re-run" in str(info.value)
    conn = sqlite3.connect(tmp_path / "checkpoint.sqlite")
    try:
        states = {s for (s,) in conn.execute("SELECT state FROM queries")}
        answered = conn.execute("SELECT coalesce(sum(count), 0) FROM api_calls").fetchone()[0]
        sent = conn.execute("SELECT value FROM meta WHERE key = 'api_calls_sent'").fetchall()
    finally:
        conn.close()
    assert states == {"active"}  # nothing marked failed
    assert answered == 0  # refused connections are not API calls
    assert sent in ([], [("0",)])

    server = await start_emulator()
    cfg = crawl_config(server, tmp_path, queries, limit=5)
    async with Crawler(cfg) as crawler:
        report = await crawler.run()
    assert report.stats["run"]["stored"] == 10
    assert report.stats["run"]["api_calls"] >= 2


def test_the_retired_default_endpoint_is_named_in_the_error() -> None:
    ctx = SourceContext.__new__(SourceContext)
    ctx.config = SimpleNamespace(endpoint=DEFAULT_ENDPOINT)  # type: ignore[assignment]
    hint = ctx._unreachable_hint()
    assert "retired" in hint
    assert "--endpoint" in hint
    ctx.config = SimpleNamespace(endpoint="http://127.0.0.1:9/")  # type: ignore[assignment]
    assert "retired" not in ctx._unreachable_hint()


# -- 12. progress on resume: the whole dataset, this run's part, and what an idle crawl awaits -


async def test_a_resumed_run_reports_the_whole_dataset(host: Host, tmp_path: Path) -> None:
    plan = [("x", 100, [f"img/x{i}" for i in range(6)])]
    await crawl(host, tmp_path, plan)
    resumed = Crawler(config(host, tmp_path), producers=[producer(host, plan)])
    async with resumed:  # before anything runs, the display already knows the crawl
        assert (resumed.counters.queries_total, resumed.counters.stored_before) == (1, 6)
    crawler = await crawl(host, tmp_path, plan)  # nothing left to do
    report = crawler.counters.snapshot()
    assert (report["stored"], report["dataset_stored"]) == (0, 6)
    assert "stored 6 (+0 this run)" in crawler.counters.line()
    table = {
        k.strip(): v
        for k, v in (ln.rsplit(maxsplit=1) for ln in summary_table(report).splitlines())
    }
    assert (table["images in the dataset"], table["stored (this run)"]) == ("6", "0")


async def test_an_idle_crawl_says_what_it_waits_for(host: Host, tmp_path: Path) -> None:
    host.hold["slow"] = asyncio.Event()
    crawler = Crawler(config(host, tmp_path), producers=[producer(host, [("x", 10, ["img/slow"])])])
    async with crawler:
        run = asyncio.create_task(crawler.run())
        while not crawler.in_flight:  # yield (no clock) until the download started
            await asyncio.sleep(0)
        assert crawler.waiting_for() == "1 download in progress"
        crawler.gate.limiter.pause(30)
        assert crawler.waiting_for().startswith("the API: throttled, every call waits")
        crawler.counters.last_progress -= 60  # as if nothing had moved for a minute
        reporter = ProgressReporter(crawler.counters, live=False, waiting=crawler.waiting_for)
        assert "idle 60 s: waiting for the API: throttled" in crawler.counters.line(
            reporter._waiting()
        )
        host.hold["slow"].set()
        await run


async def test_one_query_on_5xx_does_not_stop_the_others(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    # A query whose 5xx outlast --api-retries used to stop every other query's paging too
    # (the next API call of any source raised the incomplete-crawl error).
    failing = {"on": True}

    @web.middleware
    async def bad_query_fails(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if failing["on"] and request.query.get("q") == "bad":
            body = {"_type": "ErrorResponse", "errors": [{"code": "ServerError", "message": "x"}]}
            return web.json_response(body, status=500)
        return await handler(request)

    config = EmulatorConfig(qps=None, corpus=small_corpus(fault_rate=0.0, results_per_query=90))
    # (attached before the emulator starts: its app is then frozen)
    server = await start_emulator(config, attach=lambda a: a.middlewares.append(bad_query_fails))
    queries = ["bad", "red panda", "lighthouse"]
    cfg = crawl_config(server, tmp_path, queries, api_retries=1, api_backoff=0.01, count=10,
                       limit=1000)  # fmt: skip
    async with Crawler(cfg) as crawler:
        with pytest.raises(IncompleteCrawlError) as info:
            await crawler.run()
    assert info.value.exit_code == 6
    states = {r["text"]: r["state"] for r in db(tmp_path, "SELECT text, state FROM queries")}
    assert states == {"bad": "active", "red panda": "exhausted", "lighthouse": "exhausted"}
    pages = {r["text"]: r["n"] for r in db(
        tmp_path, "SELECT q.text, count(*) n FROM pages p JOIN queries q ON q.id = p.query_id "
        "GROUP BY q.text")}  # fmt: skip
    assert pages["red panda"] >= 9
    assert pages["lighthouse"] >= 9
    assert db(tmp_path, "SELECT count(*) n FROM candidates WHERE status = 'pending'")[0]["n"] == 0

    failing["on"] = False  # the server recovers: the next run finishes the query
    async with Crawler(cfg) as crawler:
        report = await crawler.run()
    assert report.completed
    assert {r["state"] for r in db(tmp_path, "SELECT state FROM queries")} == {"exhausted"}


def big_picture(name: str) -> bytes:
    rng = random.Random(name)
    img = Image.frombytes("RGB", (160, 160), rng.randbytes(160 * 160 * 3))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()  # ~77 KB: a 3 MB disk fills after a few dozen


@pytest.fixture
async def pictures() -> AsyncIterator[Host]:
    """A local host serving ``/img/<n>``: incompressible ~77 KB PNGs (:func:`big_picture`)."""
    app = web.Application()

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=big_picture(request.match_info["n"]), content_type="image/png")

    app.router.add_get("/img/{n}", image)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Host(f"http://127.0.0.1:{runner.addresses[0][1]}/", {}, [])
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("layout", ["files", "webdataset"])
async def test_a_real_full_disk_exits_5_and_resumes_once_there_is_room(
    pictures: Host, tmp_path: Path, layout: str
) -> None:
    # The checkpoint fills up too (SQLite: "database or disk is full"); that used to end the
    # crawl with a CheckpointError (exit 1).
    host = pictures
    plan = [("x", 1000, [f"img/{i}" for i in range(120)])]
    extra: dict[str, Any] = {"output_format": layout, "shard_size": 1000}
    with tmpfs(tmp_path / "disk", "size=3m") as disk:
        out = disk / "out"
        crawler = Crawler(
            config(host, out, concurrency=4, **extra), producers=[producer(host, plan)]
        )
        async with crawler:
            with pytest.raises(StorageError) as info:
                await crawler.run()
        assert info.value.exit_code == 5
        assert "free some space" in str(info.value)
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        await crawl(host, out, plan, concurrency=4, **extra)  # room again: resumes
        statuses = [r["status"] for r in rows(out)]
        assert statuses.count("stored") == 120
        assert len(read_manifest(out)) == 120


async def test_the_free_space_floor_stops_the_crawl_before_the_disk_is_full(
    pictures: Host, tmp_path: Path
) -> None:
    host = pictures
    plan = [("x", 1000, [f"img/{i}" for i in range(60)])]
    with tmpfs(tmp_path / "disk", "size=8m") as disk:
        out = disk / "out"
        floor = 6 * 1024 * 1024  # about 20 images of room above it, once SQLite has its share
        crawler = Crawler(
            config(host, out, concurrency=4, min_free=floor), producers=[producer(host, plan)]
        )
        async with crawler:
            with pytest.raises(StorageError) as info:
                await crawler.run()
        assert info.value.exit_code == 5
        assert "below --min-free 6.0 MiB" in str(info.value)
        found = rows(out)
        stored = [r for r in found if r["status"] == "stored"]
        assert 0 < len(stored) < 60
        assert {r["status"] for r in found} <= {"stored", "pending"}  # nothing lost or failed
        files = sorted(p.name for p in (out / "images" / "x").iterdir())
        assert files == sorted(Path(r["path"]).name for r in stored)  # no file without its row
        assert len(read_manifest(out)) == len(stored)
        assert shutil.disk_usage(out).free >= floor - 2 * 1024 * 1024  # the floor held

        # Asked for more than the filesystem has: refused before any request.
        with pytest.raises(StorageError, match="nothing was done") as early:
            async with Crawler(config(host, out, min_free=1 << 40)):
                pass
        assert early.value.exit_code == 5

        await crawl(host, out, plan, concurrency=4, min_free=0)  # the floor lowered: resumes
        assert [r["status"] for r in rows(out)].count("stored") == 60


async def test_a_candidate_is_not_skipped_while_the_write_that_fills_the_query_may_fail(
    host: Host, tmp_path: Path
) -> None:
    # Query x wants one image. b arrives while a's write (which would fill x) is under way:
    # b used to be skipped at once, and when a's write failed x ended the run one short.
    writing = asyncio.Event()
    parked = threading.Event()
    loop = asyncio.get_running_loop()

    async def produce(crawler: Crawler) -> None:
        cp = crawler.checkpoint
        row = await cp.upsert_query(source="urls", label="x", text="x", norm="x")
        urls = [host.base + "img/a", host.base + "img/b"]
        cands = [Candidate(url=u, label="x", query="x", source=Source.URLS) for u in urls]
        a, b = await cp.add_candidates(cands, query_id=row.id)
        state = crawler.query_state(row.id, "x", "x", 0)
        state.limit = 1
        await crawler.enqueue([a])
        await writing.wait()  # a is stored-but-not-yet-written
        await crawler.enqueue([b])

    crawler = Crawler(config(host, tmp_path, concurrency=2), producers=[produce])
    async with crawler:

        def first_write_fails(n: int) -> None:
            if n == 1:
                loop.call_soon_threadsafe(writing.set)
                assert parked.wait(10), "b was never parked"
                raise OSError(errno.EACCES, "Permission denied")

        intercept_writes(crawler, first_write_fails)
        handle = crawler._handle

        async def watch(candidate: Candidate) -> Candidate | None:
            result = await handle(candidate)
            if any(s.parked for s in crawler.queries.values()):
                parked.set()
            return result

        crawler._handle = watch  # type: ignore[method-assign]
        async with asyncio.timeout(60):  # a deadlock guard (the old code never parks b)
            await crawler.run()
    got = {r["url"].rsplit("/", 1)[1]: (r["status"], r["error_class"]) for r in rows(tmp_path)}
    assert got == {"a": ("failed", "write_error"), "b": ("stored", None)}


# -- 16. work lost on the way (a remote engine's worker died) -----------------------------------


class LossyCrawler(Crawler):
    """A crawler whose workshop loses work, as a Ray worker that dies does: ``_obtain`` loses
    the URLs in ``lose_fetch`` (``always``: every time; otherwise once each) and ``_place``
    loses the first ``lose_writes`` writes (after the decision, before the file)."""

    def __init__(self, *args: Any, lose_fetch: set[str], always: bool = False,
                 lose_writes: int = 0, **kw: Any) -> None:  # fmt: skip
        super().__init__(*args, **kw)
        self.lose_fetch, self.always, self.lose_writes = lose_fetch, always, lose_writes
        self.losses: list[str] = []

    async def _obtain(self, candidate: Candidate) -> Any:
        if candidate.url in self.lose_fetch:
            if not self.always:
                self.lose_fetch.discard(candidate.url)
            self.losses.append(f"fetch {candidate.url}")
            raise BytesLost("worker 0 died")
        return await super()._obtain(candidate)

    async def _place(self, candidate: Candidate, obtained: Any) -> Any:
        if self.lose_writes > 0:
            self.lose_writes -= 1
            self.losses.append(f"write {candidate.url}")
            raise BytesLost("worker 1 died")
        return await super()._place(candidate, obtained)


async def test_work_lost_before_its_decision_is_done_again(host: Host, tmp_path: Path) -> None:
    paths = [f"img/p{i}" for i in range(6)]
    lose = {host.base + p for p in paths[:3]}
    crawler = LossyCrawler(
        config(host, tmp_path), producers=[producer(host, [("x", 10, paths)])], lose_fetch=lose
    )
    async with crawler:
        await crawler.run()
    assert len(crawler.losses) == 3
    assert sorted(r["status"] for r in rows(tmp_path)) == ["stored"] * 6
    assert len(read_manifest(tmp_path)) == 6


async def test_an_image_lost_every_time_fails_as_worker_lost(host: Host, tmp_path: Path) -> None:
    crawler = LossyCrawler(
        config(host, tmp_path),
        producers=[producer(host, [("x", 10, ["img/poison", "img/fine"])])],
        lose_fetch={host.base + "img/poison"},
        always=True,
    )
    async with crawler:
        await crawler.run()
    assert len(crawler.losses) == MAX_LOSSES + 1
    got = {r["url"].rsplit("/", 1)[1]: r for r in rows(tmp_path)}
    assert got["poison"]["status"] == "failed"
    assert got["poison"]["error_class"] == "worker_lost"
    assert got["fine"]["status"] == "stored"


async def test_a_winner_lost_in_its_write_is_fetched_again_and_stored_once(
    host: Host, tmp_path: Path
) -> None:
    # Four URLs of one picture; the first write is lost after the winner was decided: its
    # reservation is released (the copies waiting on it decide again), and exactly one copy
    # ends stored, the others duplicates of it.
    crawler = LossyCrawler(
        config(host, tmp_path, concurrency=4),
        producers=[producer(host, [("x", 10, [f"same/{i}" for i in range(4)])])],
        lose_fetch=set(),
        lose_writes=1,
    )
    async with crawler:
        await crawler.run()
    assert len(crawler.losses) == 1
    got = rows(tmp_path)
    stored = [r for r in got if r["status"] == "stored"]
    assert len(stored) == 1
    assert sorted(r["status"] for r in got) == ["duplicate"] * 3 + ["stored"]
    assert {r["duplicate_of"] for r in got if r["status"] == "duplicate"} == {stored[0]["sha256"]}
    assert len(crawler.dedup) == 1
    manifest = read_manifest(tmp_path)
    assert [m["sha256"] for m in manifest] == [stored[0]["sha256"]]
    assert (tmp_path / manifest[0]["path"]).is_file()


# -- issue 18: a signal during a long start-up ------------------------------------------------


@pytest.mark.parametrize("step", ["recovery", "dedup rebuild"])
async def test_a_signal_during_start_up_stops_it_cleanly(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """At millions of images start-up takes seconds: a SIGTERM then must not wait for it.
    The step is held (on an event) while the signal arrives: start-up ends with Interrupted
    (exit 143), nothing is half-done, and the same crawl then resumes and completes."""
    plan = [("x", 100, [f"img/x{i}" for i in range(6)]), ("y", 100, ["img/y0"])]
    await crawl(host, tmp_path, plan[:1])  # a first run: something to recover and rebuild
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        assert release.wait(60), "the test never released the held step"

    if step == "recovery":
        import bingcrawl.store.recovery as recovery

        listing = recovery._listing

        def held_listing(folder: str) -> list[os.DirEntry[str]]:
            hold()
            return listing(folder)

        monkeypatch.setattr(recovery, "_listing", held_listing)
    else:
        import bingcrawl.engine.crawler as crawler_module

        until = crawler_module._until

        def held_until(found: Any, stop: threading.Event) -> Any:
            hold()
            return until(found, stop)

        monkeypatch.setattr(crawler_module, "_until", held_until)
    crawler = Crawler(config(host, tmp_path), producers=[producer(host, plan)])
    opening = asyncio.ensure_future(crawler.__aenter__())
    await asyncio.to_thread(entered.wait, 60)  # the step is under way, in its thread
    crawler.request_stop(signal.SIGTERM)
    release.set()
    with pytest.raises(Interrupted) as info:
        await opening
    assert info.value.code == 143
    assert crawler._state == "closed"
    monkeypatch.undo()
    before = len(host.served)
    # nothing was half-done: the same crawl resumes and completes
    await crawl(host, tmp_path, plan)
    assert sorted(r["status"] for r in rows(tmp_path)) == ["stored"] * 7
    assert len(read_manifest(tmp_path)) == 7
    assert len(host.served) == before + 1  # only the new image was fetched


def test_the_stored_hashes_stop_being_read_once_a_stop_is_asked() -> None:
    from bingcrawl.engine.crawler import _until
    from bingcrawl.store.recovery import StartupStopped

    stop = threading.Event()
    rows = _until(iter(range(200_000)), stop)
    assert next(rows) == 0
    stop.set()
    with pytest.raises(StartupStopped):
        sum(rows)  # ends at the next look, long before the 200,000th row
