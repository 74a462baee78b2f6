"""A crawl through SerpApi, end to end against the emulator: bing_images paged by first/count
with Bing's filters mapped, google_images by ijn, the key in the query string and never in a
message, the run-out-of-searches answer a clean exit-4 stop."""

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


def serpapi_config(server: Any, out: Path, queries: list[str], **kw: Any) -> Any:
    config = crawl_config(server, out, queries, **kw)
    return dataclasses.replace(config, provider="serpapi", key="serp-key")


@pytest.mark.parametrize(("engine", "paging"), [("bing_images", "first"), ("google_images", "ijn")])
async def test_both_engines_page_to_the_end(
    engine: str, paging: str, start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=clean_corpus(results_per_query=230))
    config = serpapi_config(server, tmp_path, ["bison"], limit=1000, count=50)
    config = dataclasses.replace(config, serpapi_engine=engine)
    async with Crawler(config) as crawler:
        await crawler.run()
    log = [r for r in server.state.requests(endpoint="serpapi") if r.status == 200]
    pages = [r.params[paging] for r in log]
    assert pages == (["1", "51", "101", "151", "201"] if engine == "bing_images" else
                     ["0", "1", "2"])  # fmt: skip
    assert {r.params["api_key"] for r in log} == {"serp-key"}
    manifest = read_manifest(tmp_path)
    assert {key_of(m["content_url"]) for m in manifest} == {
        s.key for s in server.corpus.query_results("bison")
    }
    assert {m["provider"] for m in manifest} == {"serpapi"}


async def test_running_out_of_searches_stops_cleanly(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(monthly_quota=2, corpus=clean_corpus(results_per_query=200))
    config = serpapi_config(server, tmp_path, ["yak"], limit=1000, count=50)
    async with Crawler(config) as crawler:
        with pytest.raises(QuotaExceededError) as raised:
            await crawler.run()
    assert "serp-key" not in str(raised.value)
    assert len(read_manifest(tmp_path)) == 100  # the two pages answered


def test_serpapi_options(tmp_path: Path) -> None:
    env = {"SERPAPI_API_KEY": "k"}
    config = bingcrawl.make_config(
        ["owl"], tmp_path, provider="serpapi", license="Public", size="Large", env=env
    )
    assert config.filter_map() == {"imagesize": "large", "license": "L1"}
    assert config.fingerprint()["serpapi_engine"] == "bing_images"
    with pytest.raises(bingcrawl.ConfigError, match=r"^--license: provider serpapi with google"):
        bingcrawl.make_config(
            ["owl"], tmp_path, provider="serpapi", serpapi_engine="google_images",
            license="Public", env=env,
        )  # fmt: skip
    with pytest.raises(bingcrawl.ConfigError, match=r"^--key: .*SERPAPI_API_KEY"):
        bingcrawl.make_config(["owl"], tmp_path, provider="serpapi", env={})
