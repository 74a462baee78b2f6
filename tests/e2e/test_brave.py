"""A crawl through the Brave provider, end to end against the emulator: the key in its header,
one page a query, throttling waited out, the monthly quota a clean exit-4 stop."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import bingcrawl
from bingcrawl.engine.crawler import Crawler
from bingcrawl.errors import QuotaExceededError
from tests.support.crawls import crawl_config, key_of, read_manifest
from tests.support.emulator import StartEmulator, clean_corpus


def brave_config(server: Any, out: Path, queries: list[str], **kw: Any) -> Any:
    config = crawl_config(server, out, queries, **kw)
    return dataclasses.replace(config, provider="brave", key="brave-token")


async def test_one_page_a_query_with_the_key_and_throttling(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(qps=1.0, corpus=clean_corpus(results_per_query=300))
    queries = ["puffin", "walrus", "ibex"]
    config = brave_config(server, tmp_path, queries, limit=1000, count=120, qps=50.0)
    async with Crawler(config) as crawler:
        await crawler.run()
    log = server.state.requests(endpoint="brave")
    answered = [r for r in log if r.status == 200]
    assert sorted(r.params["q"] for r in answered) == sorted(queries)  # once each
    assert any(r.status == 429 for r in log), "never throttled: the test proves nothing"
    assert {r.key for r in log} == {"brave-token"}
    manifest = read_manifest(tmp_path)
    want = {s.key for q in queries for s in server.corpus.query_results(q)[:120]}
    assert {key_of(m["content_url"]) for m in manifest} == want
    assert {m["provider"] for m in manifest} == {"brave"}
    assert {m["license"] for m in manifest} == {None}  # Brave states no license


async def test_the_monthly_quota_stops_the_crawl_cleanly(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(monthly_quota=1, corpus=clean_corpus(results_per_query=20))
    config = brave_config(server, tmp_path, ["a", "b"], limit=1000, count=20)
    async with Crawler(config) as crawler:
        with pytest.raises(QuotaExceededError):
            await crawler.run()
    assert crawler.report is not None
    assert crawler.report.exit_code == 4
    assert len(read_manifest(tmp_path)) == 20  # the one query answered is stored


def test_brave_needs_a_key_and_takes_only_its_filters(tmp_path: Path) -> None:
    env = {"BRAVE_SEARCH_API_KEY": "t"}
    config = bingcrawl.make_config(["owl"], tmp_path, provider="brave", cc="de", env=env)
    assert (config.key, config.endpoint) == ("t", "https://api.search.brave.com/")
    assert config.filter_map() == {"country": "DE"}
    with pytest.raises(bingcrawl.ConfigError, match=r"^--key: .*BRAVE_SEARCH_API_KEY"):
        bingcrawl.make_config(["owl"], tmp_path, provider="brave", env={})
    with pytest.raises(bingcrawl.ConfigError, match=r"^--image-type: provider brave"):
        bingcrawl.make_config(["owl"], tmp_path, provider="brave", image_type="Photo", env=env)
