"""End-to-end crawls against the emulator over loopback: the dataset on disk is right."""

from __future__ import annotations

import hashlib
import io
import itertools
import sqlite3
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from PIL import Image

from bingcrawl.emulator.server import emulator_process
from bingcrawl.engine.crawler import Crawler
from bingcrawl.errors import AuthenticationError, QuotaExceededError
from tests.support.blocking import watch_blocking
from tests.support.crawls import (
    EXPECTED_ERROR,
    SUCCESS_FAULTS,
    crawl_config,
    db,
    key_of,
    read_manifest,
    served_sha256,
    small_corpus,
)
from tests.support.emulator import StartEmulator

MANIFEST_FIELDS = {
    "path", "label", "query", "source", "content_url", "host_page_url", "image_id", "name",
    "sha256", "phash", "width", "height", "format", "bytes", "license", "fetched_at",
}  # fmt: skip

QUERIES = ("aston martin", "red panda", "lighthouse at dusk")


def candidates(out: Path) -> list[sqlite3.Row]:
    """Every candidate row of the checkpoint."""
    return db(out, "SELECT * FROM candidates")


async def test_crawl_stores_exactly_the_ground_truth(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=small_corpus(fault_rate=0.0))
    config = crawl_config(server, tmp_path, QUERIES, limit=1000, count=25)
    async with Crawler(config) as crawler:
        await crawler.run()

    fetched = dict(server.image_host.requests)  # before the test's own fetches below
    results = {q: server.corpus.query_results(q) for q in QUERIES}
    specs = {s.key: s for rs in results.values() for s in rs}
    truth = await served_sha256(server, specs.values())
    manifest = read_manifest(tmp_path)

    # exactly one stored file per distinct byte string the queries returned
    assert sorted(r["sha256"] for r in manifest) == sorted(set(truth.values()))
    for row in manifest:
        assert row.keys() >= MANIFEST_FIELDS
        assert row["provider"] == "bing"  # Bing states no license of its own: the filter's
        assert (row["license_url"], row["creator"], row["attribution"]) == (None, None, None)
        data = (tmp_path / row["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert len(data) == row["bytes"]
        assert (
            row["path"]
            == f"images/{row['label']}/{row['sha256'][:16]}.{Path(row['path']).suffix[1:]}"
        )
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            assert (img.width, img.height) == (row["width"], row["height"])
            assert img.format is not None
            assert img.format.lower() == row["format"]
        spec = specs[key_of(row["content_url"])]
        assert truth[spec.key] == row["sha256"]
        assert row["query"] in QUERIES
        assert row["source"] == "search"
        assert len(row["phash"]) == 16
    # the label is the query's slug
    assert {r["label"] for r in manifest} <= {"aston_martin", "red_panda", "lighthouse_at_dusk"}
    # every result URL was fetched exactly once
    assert set(fetched) == set(specs)
    assert set(fetched.values()) == {1}


async def test_every_fault_ends_with_its_status(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=small_corpus(fault_rate=0.45, results_per_query=80))
    specs = {s.key: s for s in server.corpus.query_results("fault parade")}
    # The emulator builds its gzip bomb (0.5 s of CPU) on the first request for one: built
    # while the crawl runs on a busy machine, it outlasted the crawl's 1.5 s timeout and the
    # fault ended as a timeout. A HEAD (no body) builds it first.
    [bomb, *_] = (key for key, spec in specs.items() if spec.fault == "gzip_bomb")
    async with (
        aiohttp.ClientSession() as session,
        session.head(f"{server.base_url}img/{bomb}") as resp,
    ):
        assert resp.status == 200
    config = crawl_config(server, tmp_path, ["fault parade"], limit=1000, count=50, retries=2)
    async with Crawler(config) as crawler:
        await crawler.run()

    faults_seen = Counter(s.fault for s in specs.values() if s.fault)
    assert set(faults_seen) >= set(EXPECTED_ERROR)  # the corpus really exercised every fault
    rows = {key_of(r["url"]): r for r in candidates(tmp_path)}
    stored_keys = {key_of(r["content_url"]) for r in read_manifest(tmp_path)}
    for key, row in rows.items():
        spec = specs[key]
        if spec.fault in SUCCESS_FAULTS:
            assert row["status"] in ("stored", "duplicate"), (spec.fault, row["error_class"])
        else:
            assert row["status"] == "failed", spec.fault
            assert row["error_class"] in EXPECTED_ERROR[spec.fault], (
                spec.fault,
                row["error_class"],
            )
            assert key not in stored_keys
    # no URL fetched twice except by a retry (of a retryable fault)
    requests = server.image_host.requests
    for key, spec in specs.items():
        if spec.fault in (None, "wrong_content_type"):
            assert requests[key] <= 1, spec
    assert requests[next(k for k, s in specs.items() if s.fault == "transient_503")] == 3


async def test_limit_is_exact_per_query(start_emulator: StartEmulator, tmp_path: Path) -> None:
    server = await start_emulator()
    config = crawl_config(server, tmp_path, QUERIES, limit=7, count=5)
    async with Crawler(config) as crawler:
        await crawler.run()
    per_label = Counter(r["label"] for r in read_manifest(tmp_path))
    assert per_label == {"aston_martin": 7, "red_panda": 7, "lighthouse_at_dusk": 7}


async def test_qps_is_used_but_never_exceeded(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    qps = 10
    server = await start_emulator(qps=float(qps), corpus=small_corpus(results_per_query=90))
    config = crawl_config(
        server, tmp_path, ["one", "two", "three", "four"], qps=qps, limit=1000, count=10
    )
    async with Crawler(config) as crawler:
        await crawler.run()
    searches = server.state.requests(endpoint="search")
    assert len(searches) >= 30
    assert server.state.statuses().get(429, 0) == 0
    times = sorted(r.time for r in searches)
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    # Used: most calls follow the previous one after about 1/qps (the median gap; a machine
    # that stalls the process now and then lengthens a few gaps, not the median). Never
    # exceeded: the emulator, which enforces the same QPS, answered no 429.
    assert gaps[len(gaps) // 2] <= 1.25 / qps, gaps


async def test_retry_after_is_honoured(start_emulator: StartEmulator, tmp_path: Path) -> None:
    # The emulator allows 2 QPS; the crawler is told 20, so it meets 429s.
    server = await start_emulator(qps=2.0, corpus=small_corpus(results_per_query=40))
    config = crawl_config(
        server, tmp_path, ["throttled"], qps=20, limit=1000, count=5, max_active_queries=1
    )
    async with Crawler(config) as crawler:
        await crawler.run()
    log = server.state.requests(endpoint="search")
    refused = [r for r in log if r.status == 429]
    assert refused, "the emulator never throttled: the test proves nothing"
    for r in refused:
        # The emulator's Retry-After is the wait for a free slot rounded up: at least 1 s.
        later = [x for x in log if x.time > r.time]
        if later:
            assert later[0].time - r.time >= 1.0 - 0.01
    # and the query still completed with all its results
    keys = {s.key for s in server.corpus.query_results("throttled")}
    assert {key_of(r["url"]) for r in candidates(tmp_path)} == keys


async def test_empty_200_and_500_do_not_lose_results(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(
        p_empty_200=0.2,
        p_server_error=0.3,
        corpus=small_corpus(fault_rate=0.0, results_per_query=50),
    )
    config = crawl_config(
        server,
        tmp_path,
        ["flaky api"],
        qps=100,
        limit=1000,
        count=10,
        api_retries=20,
        api_backoff=0.05,
    )
    async with Crawler(config) as crawler:
        await crawler.run()
    statuses = server.state.statuses()
    assert statuses[500] > 0
    assert any(r.outcome == "empty_200" for r in server.state.requests(endpoint="search"))
    keys = {s.key for s in server.corpus.query_results("flaky api")}
    seen = {key_of(r["url"]) for r in candidates(tmp_path)}
    assert seen == keys


async def test_bad_key_stops_before_any_download(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(keys=frozenset({"the-right-key"}))
    config = crawl_config(server, tmp_path, QUERIES)
    async with Crawler(config) as crawler:
        with pytest.raises(AuthenticationError):
            await crawler.run()
    assert sum(server.image_host.requests.values()) == 0


async def test_quota_finishes_queued_downloads_then_stops(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(monthly_quota=2, corpus=small_corpus(fault_rate=0.0))
    config = crawl_config(server, tmp_path, ["quota"], limit=1000, count=10, max_active_queries=1)
    async with Crawler(config) as crawler:
        with pytest.raises(QuotaExceededError):
            await crawler.run()
    rows = candidates(tmp_path)
    assert server.state.statuses(endpoint="search")[200] == 2
    assert 10 < len(rows) <= 20  # two pages of 10, less the overlap
    assert all(r["status"] != "pending" for r in rows)
    assert len(read_manifest(tmp_path)) > 0


async def test_event_loop_never_blocks(tmp_path: Path) -> None:
    # The emulator runs in its own process, so only the crawler's work runs on this loop.
    args = ["--qps", "0", "--results-per-query", "150", "--fault-rate", "0", "--seed", "3"]
    with emulator_process(args) as base_url:
        server = SimpleNamespace(base_url=base_url)
        config = crawl_config(
            server,  # type: ignore[arg-type]
            tmp_path,
            ["lag a", "lag b"],
            limit=1000,
            count=50,
            hash_workers=1,
        )
        async with watch_blocking() as watch, Crawler(config) as crawler:
            await crawler.run()
    assert len(read_manifest(tmp_path)) >= 200
    # The loop's own blocks only: a shared machine may stop the whole process for 100+ ms.
    own, sample = watch.worst()
    assert own < 0.1, f"event loop blocked for {own * 1000:.0f} ms ({watch.describe(sample)})"
