"""The whole pipeline on uvloop: the same dataset as on asyncio's loop, every fault handled.

The rest of the e2e suite runs on pytest-asyncio's (standard) loop; the CLI defaults to uvloop
when it is installed (``--event-loop auto``), so the crawl is checked here on uvloop as well,
with the hash pool's worker processes, the SSRF guard's socket factory and signals in play.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bingcrawl import eventloop
from bingcrawl.engine.crawler import Crawler
from tests.support.crawls import (
    EXPECTED_ERROR,
    SUCCESS_FAULTS,
    crawl_config,
    crawl_emulator_config,
    key_of,
    read_manifest,
    small_corpus,
)
from tests.support.emulator import Emulators

pytest.importorskip("uvloop")

QUERIES = ["aston martin", "red panda"]


async def _crawl(out: Path, loop_kind: str, **kw: Any) -> dict[str, Any]:
    running = type(asyncio.get_running_loop()).__module__
    config = crawl_emulator_config(corpus=small_corpus(fault_rate=0.3, results_per_query=50))
    # Each crawl runs in a loop of its own kind (eventloop.run), not the test's: the emulator
    # starts there too, so not through the start_emulator fixture.
    async with Emulators() as emulators:
        server = await emulators.start(config)
        async with Crawler(
            crawl_config(server, out, QUERIES, limit=1000, count=25, retries=2, **kw)
        ) as c:
            await c.run()
        specs = {s.key: s for q in QUERIES for s in server.corpus.query_results(q)}
        requests = dict(server.image_host.requests)
    return {"loop": running, "specs": specs, "requests": requests, "kind": loop_kind}


def _statuses(out: Path) -> dict[str, tuple[str, str | None]]:
    """Status per URL key; which of two copies is stored depends on timing, so both
    ``stored`` and ``duplicate`` read as ``kept``."""
    conn = sqlite3.connect(out / "checkpoint.sqlite")
    try:
        rows = conn.execute("SELECT url, status, error_class FROM candidates").fetchall()
    finally:
        conn.close()
    kept = ("stored", "duplicate")
    return {
        key_of(url): ("kept" if status in kept else status, error) for url, status, error in rows
    }


@pytest.mark.parametrize("hash_workers", [1])
def test_uvloop_crawl_matches_the_asyncio_crawl(tmp_path: Path, hash_workers: int) -> None:
    runs = {}
    for kind in ("asyncio", "uvloop"):
        out = tmp_path / kind
        runs[kind] = eventloop.run(_crawl(out, kind, hash_workers=hash_workers), kind)
    assert runs["uvloop"]["loop"].startswith("uvloop")
    assert not runs["asyncio"]["loop"].startswith("uvloop")

    manifests = {k: read_manifest(tmp_path / k) for k in runs}
    assert manifests["uvloop"]  # something was stored
    assert sorted(r["sha256"] for r in manifests["uvloop"]) == sorted(
        r["sha256"] for r in manifests["asyncio"]
    )
    statuses = _statuses(tmp_path / "uvloop")
    assert statuses == _statuses(tmp_path / "asyncio")
    specs = runs["uvloop"]["specs"]
    for key, (status, error) in statuses.items():
        fault = specs[key].fault
        if fault in SUCCESS_FAULTS:
            assert status == "kept", (fault, error)
        else:
            assert status == "failed", fault
            assert error in EXPECTED_ERROR[fault], (fault, error)
    # nothing fetched twice but retries of retryable faults, on either loop
    for run in runs.values():
        for key, count in run["requests"].items():
            spec = specs.get(key)  # None: a redirect's target
            if spec is not None and spec.fault in (None, "wrong_content_type"):
                assert count == 1, key
