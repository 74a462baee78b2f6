"""A crawl through the Wikimedia Commons provider, end to end against the emulator's
/w/api.php: no key, continue-offset paging, each file's license and author in the manifest,
maxlag and 429 waited out, and a stopped crawl resumed without asking a page twice."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import bingcrawl
from bingcrawl.emulator.wikimedia import LICENSE_OF, author
from bingcrawl.engine.crawler import Crawler
from bingcrawl.errors import QuotaExceededError
from tests.support.crawls import crawl_config, key_of, read_manifest
from tests.support.emulator import StartEmulator, clean_corpus


def commons_config(server: Any, out: Path, queries: list[str], **kw: Any) -> Any:
    config = crawl_config(server, out, queries, **kw)
    return dataclasses.replace(config, provider="wikimedia", key=None)


def offsets(server: Any) -> list[str]:
    log = server.state.requests(endpoint="wikimedia")
    return [r.params["gsroffset"] for r in log if r.status == 200 and r.outcome == "ok"]


async def test_a_keyless_commons_crawl_stores_every_file_with_license_and_author(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=clean_corpus(results_per_query=120))
    config = commons_config(server, tmp_path, ["kingfisher"], limit=1000, count=50)
    async with Crawler(config) as crawler:
        report = await crawler.run()
    specs = {s.key: s for s in server.corpus.query_results("kingfisher")}
    manifest = read_manifest(tmp_path)
    assert report.stored == len(manifest) == 120
    assert {key_of(m["content_url"]) for m in manifest} == set(specs)
    assert offsets(server) == ["0", "50", "100"]  # continue.gsroffset, followed to the end
    for m in manifest:
        spec = specs[key_of(m["content_url"])]
        short, url = LICENSE_OF[spec.license]
        assert (m["license"], m["license_url"]) == (short, url or None)
        assert m["creator"] == author(spec)  # the Artist HTML, reduced to its text
        assert m["provider"] == "wikimedia"
        assert m["attribution"].endswith("(Wikimedia Commons).")
        assert m["host_page_url"].startswith("https://commons.wikimedia.org/wiki/File:")


async def test_maxlag_and_throttling_are_waited_out_and_a_stop_resumes(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    # Every API fault kind on (500, maxlag, 503; the seeded draws meet each), and 2 calls
    # a second against a crawler told 50: everything is still found, and a budget stop
    # resumes without repeats.
    server = await start_emulator(
        qps=2.0,
        corpus=clean_corpus(results_per_query=200),
        p_server_error=0.1,
        p_empty_200=0.2,
        p_non_json_200=0.1,
    )
    config = commons_config(
        server, tmp_path, ["heron"], limit=1000, count=20, qps=50.0, max_api_calls=3
    )
    config = dataclasses.replace(config, api_backoff=0.05)
    async with Crawler(config) as crawler:
        with pytest.raises(QuotaExceededError):
            await crawler.run()
    async with Crawler(dataclasses.replace(config, max_api_calls=None)) as crawler:
        await crawler.run()
    log = server.state.requests(endpoint="wikimedia")
    outcomes = Counter(r.outcome for r in log)
    assert outcomes["empty_200"], outcomes  # maxlag met
    assert outcomes["throttled"], outcomes  # and 429
    pages = offsets(server)
    assert len(pages) == len(set(pages)) == 10, pages  # every page once, none twice
    keys = {key_of(m["content_url"]) for m in read_manifest(tmp_path)}
    assert keys == {s.key for s in server.corpus.query_results("heron")}


def test_commons_takes_no_filter_and_no_bing_only_source(tmp_path: Path) -> None:
    config = bingcrawl.make_config(["owl"], tmp_path / "o", provider="wikimedia", env={})
    assert config.endpoint == "https://commons.wikimedia.org/"
    assert (config.key, config.qps) == (None, 1.0)
    with pytest.raises(bingcrawl.ConfigError, match=r"^--license: provider wikimedia"):
        bingcrawl.make_config(["owl"], tmp_path, provider="wikimedia", license="by", env={})
    with pytest.raises(bingcrawl.ConfigError, match=r"^--similar: needs --provider bing"):
        bingcrawl.make_config(["owl"], tmp_path, provider="wikimedia", similar=3, env={})
