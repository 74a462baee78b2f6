"""Helpers for end-to-end crawls against the emulator over real loopback HTTP."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp

from bingcrawl.config import CrawlConfig, QuerySpec
from bingcrawl.emulator import EmulatorConfig, EmulatorServer
from bingcrawl.emulator.corpus import CorpusConfig, ImageSpec
from bingcrawl.emulator.imagehost import ImageHostConfig
from bingcrawl.fetch.download import DownloadConfig
from bingcrawl.fetch.netpolicy import NetworkPolicy

#: Faults after which the image is still served (content is judged by its bytes).
SUCCESS_FAULTS = frozenset({None, "transient_503", "redirect", "wrong_content_type"})

#: The error class each failing fault must end with.
EXPECTED_ERROR: dict[str, set[str]] = {
    "http_404": {"http_404"},
    "http_500": {"http_500"},
    "slow_headers": {"timeout"},
    "slow_drip": {"too_slow", "timeout"},
    "truncated_body": {"truncated"},
    "truncated_image": {"truncated"},
    "html_as_jpeg": {"not_an_image"},
    "svg_as_jpeg": {"not_an_image"},
    "random_bytes": {"not_an_image"},
    "bomb": {"decompression_bomb"},
    "oversize": {"too_large"},
    "oversize_chunked": {"too_large"},
    "huge_chunked": {"too_large"},
    "gzip_bomb": {"bad_encoding"},
    "redirect_loop": {"too_many_redirects"},
}


def small_corpus(**kw: Any) -> CorpusConfig:
    """A corpus small enough for a test crawl."""
    kw.setdefault("results_per_query", 60)
    return CorpusConfig(**kw)


def crawl_emulator_config(**fields: Any) -> EmulatorConfig:
    """An emulator for a test crawl: :func:`small_corpus`, no QPS limit, and an image host
    whose slow faults are slower (20 s) than a test crawl's timeouts and whose oversize images
    are larger (3 MiB) than its ``max_bytes`` (the end-to-end tests' ``start_emulator``
    defaults, tests/e2e/conftest.py)."""
    fields.setdefault("corpus", small_corpus())
    fields.setdefault("qps", None)
    fields.setdefault("images", ImageHostConfig(slow_seconds=20.0, oversize_bytes=3 * 1024 * 1024))
    return EmulatorConfig(**fields)


def crawl_config(
    server: EmulatorServer, out: Path, queries: Iterable[str], **kw: Any
) -> CrawlConfig:
    """A crawl of ``queries`` against ``server``, tuned so fault cases end quickly."""
    download = DownloadConfig(
        concurrency=kw.pop("concurrency", 16),
        per_host=kw.pop("per_host", 16),
        timeout=1.5,
        connect_timeout=1.0,
        read_timeout=1.0,
        min_throughput=20_000,
        throughput_grace=0.3,
        retries=kw.pop("retries", 1),
        backoff_base=0.05,
        backoff_max=1.0,
        max_bytes=2 * 1024 * 1024,
        policy=NetworkPolicy.from_cidrs(["127.0.0.1/32"]),
    )
    kw.setdefault("qps", 50.0)
    kw.setdefault("hash_workers", 0)
    kw.setdefault("near_dup_distance", 0)
    kw.setdefault("grace", 1.0)
    return CrawlConfig(
        out=out,
        queries=tuple(QuerySpec.of(q) for q in queries),
        key="test-key",
        endpoint=server.base_url,
        download=download,
        **kw,
    )


def read_manifest(out: Path) -> list[dict[str, Any]]:
    """The manifest's rows."""
    with (out / "manifest.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def key_of(url: str) -> str:
    """The emulator's URL key of an image URL."""
    return url.split("/img/", 1)[1]


async def served_sha256(server: EmulatorServer, specs: Iterable[ImageSpec]) -> dict[str, str]:
    """sha256 of what the emulator really serves for each (successful) spec, over the wire."""
    result = {}
    async with aiohttp.ClientSession() as session:
        for spec in specs:
            for _ in range(10):  # transient 503s: retry until served
                async with session.get(f"{server.base_url}img/{spec.key}") as resp:
                    if resp.status == 200:
                        result[spec.key] = hashlib.sha256(await resp.read()).hexdigest()
                        break
    return result


def db(out: Path, sql: str, *args: object) -> list[sqlite3.Row]:
    """Rows of one query on OUT's checkpoint (a fresh connection, behind the crawler's back)."""
    conn = sqlite3.connect(out / "checkpoint.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()
