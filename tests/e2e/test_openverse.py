"""A crawl through the Openverse provider, end to end against the emulator's /v1/images/:
no key, page-numbered paging to the 240-result cap, licenses per image in the manifest,
throttling waited out, a stopped crawl resumed without asking a page twice, and the options
Openverse cannot honour refused before any request."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections import Counter
from pathlib import Path

import pytest

import bingcrawl
from bingcrawl.cli import main
from bingcrawl.emulator.openverse import LICENSE_OF
from bingcrawl.engine.crawler import Crawler
from bingcrawl.errors import QuotaExceededError
from bingcrawl.store.output import status_report
from tests.support.crawls import crawl_config, key_of, read_manifest
from tests.support.emulator import StartEmulator, clean_corpus

OPENVERSE_LICENSES = {f"{code} {version}" for code, version in LICENSE_OF.values()}


def openverse_config(server: object, out: Path, queries: list[str], **kw: object) -> object:
    config = crawl_config(server, out, queries, **kw)  # type: ignore[arg-type]
    return dataclasses.replace(config, provider="openverse", key=None)


def page_requests(server: object) -> list[tuple[str, str]]:
    log = server.state.requests(endpoint="openverse")  # type: ignore[attr-defined]
    return [(r.params["q"], r.params["page"]) for r in log if r.status == 200]


async def test_a_keyless_openverse_crawl_stores_every_result_with_its_license(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=clean_corpus(results_per_query=300))
    config = openverse_config(server, tmp_path, ["red panda"], limit=1000, count=50)
    async with Crawler(config) as crawler:  # type: ignore[arg-type]
        report = await crawler.run()
    manifest = read_manifest(tmp_path)
    specs = server.corpus.query_results("red panda")
    # 240 is the most Openverse serves for one query; anonymous pages hold 20.
    assert report.stored == len(manifest) == 240
    assert {key_of(m["content_url"]) for m in manifest} == {s.key for s in specs[:240]}
    assert page_requests(server) == [("red panda", str(p)) for p in range(1, 13)]
    assert {r.params["page_size"] for r in server.state.requests(endpoint="openverse")} == {"20"}
    by_key = {s.key: s for s in specs}
    for m in manifest:
        code, version = LICENSE_OF[by_key[key_of(m["content_url"])].license]
        assert m["license"] == f"{code} {version}"  # the image's own license
        # ... and the rest of what Openverse states about it (DESIGN.md, "Providers")
        assert m["provider"] == "openverse"
        assert m["license_url"].startswith("https://creativecommons.org/")
        assert m["creator"].startswith("Photographer ")
        assert m["attribution"].startswith(f'"{m["name"]}" by {m["creator"]}')
    assert server.state.requests(endpoint="search") == []  # not one Bing call


async def test_a_license_filter_and_throttling(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    # The emulator allows 2 calls a second, the crawler is told 50: it meets 429s; and
    # server errors (500, 503) on a seeded fifth of the calls.
    server = await start_emulator(
        qps=2.0,
        corpus=clean_corpus(results_per_query=300),
        p_server_error=0.2,
        p_non_json_200=0.1,
    )
    config = openverse_config(server, tmp_path, ["owl", "fox"], limit=1000, qps=50.0)
    config = dataclasses.replace(  # type: ignore[type-var]
        config, filters=(("license", "by,cc0"),), api_backoff=0.05
    )
    async with Crawler(config) as crawler:  # type: ignore[arg-type]
        await crawler.run()
    log = server.state.requests(endpoint="openverse")
    assert any(r.status == 429 for r in log), "never throttled: the test proves nothing"
    assert any(r.status >= 500 for r in log), "no server error: the test proves nothing"
    assert all(r.params["license"] == "by,cc0" for r in log)
    manifest = read_manifest(tmp_path)
    assert manifest
    assert {m["license"] for m in manifest} <= {"by 4.0", "cc0 1.0"}
    wanted = {
        s.key
        for q in ("owl", "fox")
        for s in server.corpus.query_results(q)
        if LICENSE_OF[s.license][0] in ("by", "cc0")
    }
    assert {key_of(m["content_url"]) for m in manifest} == wanted  # nothing lost to a 429


async def test_a_stopped_crawl_resumes_without_asking_a_page_twice(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    server = await start_emulator(corpus=clean_corpus(results_per_query=100))
    config = openverse_config(server, tmp_path, ["heron"], limit=1000, max_api_calls=2)
    async with Crawler(config) as crawler:  # type: ignore[arg-type]
        with pytest.raises(QuotaExceededError):
            await crawler.run()
    assert len(read_manifest(tmp_path)) == 40  # two pages of 20
    resumed = dataclasses.replace(config, max_api_calls=None)  # type: ignore[type-var]
    async with Crawler(resumed) as crawler:  # type: ignore[arg-type]
        await crawler.run()
    pages = page_requests(server)
    assert Counter(pages).most_common(1)[0][1] == 1, pages  # no page asked twice
    assert [p for _, p in pages] == ["1", "2", "3", "4", "5"]
    assert len(read_manifest(tmp_path)) == 100


def test_what_openverse_cannot_honour_is_refused_before_any_request(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = bingcrawl.make_config(["red panda"], out, provider="openverse", env={})
    assert config.key is None  # keyless
    assert config.endpoint == "https://api.openverse.org/"
    assert config.qps == 0.3  # its anonymous limit, 20 calls a minute
    assert config.fingerprint()["provider"] == "openverse"
    licensed = bingcrawl.make_config(
        ["owl"], out, provider="openverse", license="BY,cc0", size="large", env={}
    )
    assert licensed.filter_map() == {"license": "by,cc0", "size": "large"}
    refusals = {
        "--image-type": {"image_type": "Photo"},
        "--license": {"license": "Public"},  # a Bing value, not an Openverse one
        "--expand": {"expand": 1},
        "--similar": {"similar": 5},
        "--trending": {"trending": True},
    }
    for flag, options in refusals.items():
        with pytest.raises(bingcrawl.ConfigError, match=f"^{flag}: .*openverse"):
            bingcrawl.make_config(["owl"], out, provider="openverse", env={}, **options)
    with pytest.raises(bingcrawl.ConfigError, match=r"^--license-type: provider bing"):
        bingcrawl.make_config(["owl"], out, key="k", license_type="commercial")
    with pytest.raises(bingcrawl.ConfigError, match="--provider openverse"):
        bingcrawl.make_config(["owl"], out, env={})  # the missing-key error names the way out
    assert not out.exists()


async def test_credits_and_a_license_filtered_export(
    start_emulator: StartEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await start_emulator(corpus=clean_corpus(results_per_query=60))
    out = tmp_path / "out"
    config = openverse_config(server, out, ["kingfisher"], limit=1000)
    async with Crawler(config) as crawler:  # type: ignore[arg-type]
        await crawler.run()
    manifest = read_manifest(out)
    assert len(manifest) == 60

    assert main(["credits", str(out)]) == 0
    text = (out / "CREDITS.md").read_text()
    licenses = Counter(m["license"] for m in manifest)
    for license, n in licenses.items():
        assert f"| {license} | {n} |" in text  # the count per license, at a glance
    entries = [line for line in text.splitlines() if line.startswith("- `images/")]
    assert len(entries) == 60
    by_path = {m["path"]: m for m in manifest}
    for entry in entries:
        path = entry.split("`")[1]
        assert by_path[path]["creator"] in entry  # the provider's own credit line
        assert entry.endswith(f"Source: <{by_path[path]['host_page_url']}>")

    assert main(["credits", str(out), "--format", "csv", "-o", "-"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["path"] for r in rows} == set(by_path)
    assert all(r["attribution"] == by_path[r["path"]]["attribution"] for r in rows)

    # A daily budget is visible: today's calls (UTC) next to the total.
    calls = json.loads(status_report(out, as_json=True))["api_calls"]
    assert calls["today_utc"] == calls["total"] == 3  # pages of 20, to 60

    export = tmp_path / "open.jsonl"
    assert main(["export", str(out), "--license", "BY,cc0", "-o", str(export)]) == 0
    kept = [json.loads(line) for line in export.read_text().splitlines()]
    expected = [m for m in manifest if m["license"].split()[0] in ("by", "cc0")]
    assert 0 < len(kept) == len(expected) < len(manifest)
    assert {k["path"] for k in kept} == {m["path"] for m in expected}


async def test_a_spent_daily_limit_is_a_clean_stop_not_a_days_wait(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    # The emulator answers a spent budget as Openverse does: 429 with a Retry-After of hours.
    server = await start_emulator(monthly_quota=1, corpus=clean_corpus(results_per_query=60))
    config = openverse_config(server, tmp_path, ["wren"], limit=1000)
    async with Crawler(config) as crawler:  # type: ignore[arg-type]
        with pytest.raises(QuotaExceededError, match="daily limit"):
            await crawler.run()
    assert crawler.report is not None
    assert crawler.report.exit_code == 4
    assert len(read_manifest(tmp_path)) == 20  # the one page answered
